"""The image pipeline's functions, run in-process on the generated test images, and the
workflow definition's shape (fixtures/imagepipe)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from allinone.testing import load_module

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "imagepipe"


def load(name: str) -> ModuleType:
    return load_module(ROOT / "functions" / name / "func.py", f"imagepipe_{name}")



def event(path: Path) -> dict[str, Any]:
    return {"trigger": "t", "event": "created", "path": str(path), "name": path.name,
            "size": path.stat().st_size,
            "contentBase64": base64.b64encode(path.read_bytes()).decode()}


def pipeline(ev: dict[str, Any]) -> dict[str, Any]:
    """What imagepipe.json does, in-process."""
    inspect = load("inspect").run(**ev)
    state = {**ev, "inspect": inspect}
    thumb = load("thumbnail").run(**state)
    hist = load("histogram").run(**state)
    out: dict[str, Any] = load("classify").run(inspect=inspect, thumbnail=thumb, histogram=hist)
    return out


@pytest.mark.parametrize("name,fmt,size,orientation,labels", [
    ("sunrise.jpg", "JPEG", (640, 400), 1, ["bright", "landscape"]),
    ("tower.jpg", "JPEG", (320, 480), 6, ["normal", "portrait"]),
    ("night.png", "PNG", (400, 300), 1, ["dark", "landscape"]),
    ("logo.png", "PNG", (256, 256), 1, ["dark", "square"]),
    ("snow.gif", "GIF", (300, 180), 1, ["bright", "landscape"]),
])
def test_each_image_through_the_functions(images: Path, name: str, fmt: str,
                                          size: tuple[int, int], orientation: int,
                                          labels: list[str]) -> None:
    ev = event(images / name)
    inspect = load("inspect").run(**ev)
    assert (inspect["format"], (inspect["width"], inspect["height"])) == (fmt, size)
    assert inspect["orientation"] == orientation and inspect["bytes"] == ev["size"]
    if fmt == "JPEG":
        assert inspect["exif"]["Make"] == "allinone" and inspect["exif"]["DateTime"]
    out = pipeline(ev)
    assert out["labels"] == labels
    (thumb_name, b64), = out["files"].items()
    assert thumb_name == name.rsplit(".", 1)[0] + ".thumb.png"
    thumb = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert thumb.format == "PNG" and max(thumb.size) == min(256, max(size))
    # Orientation applied: the thumbnail has the displayed, not the stored, aspect.
    assert (thumb.width > thumb.height) == (size[0] > size[1]) or size[0] == size[1]


def test_histogram_counts_every_pixel(images: Path) -> None:
    hist = load("histogram").run(**event(images / "night.png"))
    assert set(hist["channels"]) == {"R", "G", "B"}
    assert all(sum(c) == 400 * 300 and len(c) == 256 for c in hist["channels"].values())
    assert hist["brightness"] < 85 and hist["mean"]["B"] > hist["mean"]["R"]


def test_bad_input_is_a_clear_error(images: Path) -> None:
    with pytest.raises(ValueError, match="not an image"):
        load("inspect").run(contentBase64=base64.b64encode(b"hello").decode(), name="x.txt")
    with pytest.raises(ValueError, match="not valid base64"):
        load("inspect").run(contentBase64="***", name="x")
    with pytest.raises(ValueError, match="over maxContentBytes"):
        load("inspect").run(name="big.png", contentOmitted="the file has 9 bytes, over "
                            "maxContentBytes (1)")


def test_the_large_image_is_over_the_workflow_limit(images: Path) -> None:
    definition = json.loads((ROOT / "imagepipe.json").read_text())
    rule = definition["States"]["CheckSize"]["Choices"][0]
    assert rule["Variable"] == "$.size" and rule["Next"] == "TooLarge"
    limit = rule["NumericGreaterThan"]
    inspect = load("inspect").run(**event(images / "large.png"))
    assert inspect["bytes"] > limit
    small = load("inspect").run(**event(images / "sunrise.jpg"))
    assert small["bytes"] < limit


def test_workflow_definition_names_the_functions_and_states() -> None:
    d = json.loads((ROOT / "imagepipe.json").read_text())
    states = d["States"]
    assert d["StartAt"] == "CheckSize"
    assert states["TooLarge"]["Type"] == "Fail" and "limit" in states["TooLarge"]["Cause"]
    resources = {s["Resource"] for s in states.values() if s["Type"] == "Task"}
    for b in states["Analyse"]["Branches"]:
        resources |= {s["Resource"] for s in b["States"].values()}
    assert resources == {"img-inspect", "img-thumbnail", "img-histogram", "img-classify"}
    for fn in ("inspect", "thumbnail", "histogram", "classify"):
        assert (ROOT / "functions" / fn / "func.py").exists()
