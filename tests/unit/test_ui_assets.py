"""The dashboard's static files: each one served ships in the package, and no other."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from allinone.ui import ASSETS

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "allinone" / "ui"


def test_every_served_asset_matches_the_package_data_globs() -> None:
    # setuptools expands package-data patterns with glob from the package directory; a
    # file no pattern matches is missing from a wheel (a non-editable install) but
    # present in this source tree, so only this check would notice.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["allinone.ui"]
    shipped = {str(p.relative_to(UI / "static")) for pat in patterns for p in UI.glob(pat)
               if p.is_file()}
    assert set(ASSETS) <= shipped, set(ASSETS) - shipped


def test_the_vendored_chart_library_is_there_with_its_licence_and_version() -> None:
    vendor = resources.files("allinone.ui") / "static" / "vendor" / "uplot"
    js = (vendor / "uPlot.iife.min.js").read_text()
    readme = (vendor / "README.md").read_text()
    assert js.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "uPlot 1.6.32" in readme and "dd3ffc568903c905ae5ba8d310e37216fd597404" in readme
    assert "MIT License" in (vendor / "LICENSE").read_text()
    # the page loads it from the package before its own script, from no other origin
    html = (resources.files("allinone.ui") / "static" / "index.html").read_text()
    assert html.index("vendor/uplot/uPlot.iife.min.js") < html.index("/ui/static/app.js")
    assert "http://" not in html and "https://" not in html
