"""Browser fixtures: Debian's Chromium driven by Playwright, no browser download.

The browser and its flags are ``allinone.testing``'s (``launch_chromium``). Screenshots go to
``tests/ui/reports/`` (gitignored, kept as CI artifacts). The live ``server`` is the
shared one of ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from allinone.testing import CHROMIUM, launch_chromium

REPORTS = Path(__file__).parent / "reports"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `allinone setup` installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
        REPORTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(REPORTS / f"{request.node.name}.png"), full_page=True)
        assert errors == [], f"the page's script failed: {errors}"
    finally:
        ctx.close()
