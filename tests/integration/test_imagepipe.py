"""The image pipeline on a real server: the four Pillow functions built from their
requirements.txt, called on the generated test images, and a dropped image turned into
an outbox thumbnail by a file trigger with a sink."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from allinone.client import read_source
from allinone.testing import ROOT, ServerProcess, wait_for

pytestmark = pytest.mark.integration

PIPE = ROOT / "fixtures" / "imagepipe"
FUNCTIONS = ("inspect", "thumbnail", "histogram", "classify")


def deploy_dir(srv: ServerProcess, name: str, folder: Path) -> None:
    srv.client.create(name, read_source(folder))


@pytest.fixture(scope="module")
def pipe(server: ServerProcess) -> ServerProcess:
    for fn in FUNCTIONS:
        deploy_dir(server, f"img-{fn}", PIPE / "functions" / fn)
    for fn in FUNCTIONS:
        server.wait_phase(f"img-{fn}", "Ready", timeout=300)
    return server



def call(srv: ServerProcess, fn: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = srv.invoke(f"img-{fn}", body)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


@pytest.mark.parametrize("name,labels", [
    ("sunrise.jpg", ["bright", "landscape"]), ("tower.jpg", ["normal", "portrait"]),
    ("night.png", ["dark", "landscape"]), ("snow.gif", ["bright", "landscape"]),
])
def test_functions_on_the_test_images(pipe: ServerProcess, images: Path, name: str,
                                      labels: list[str]) -> None:
    content = base64.b64encode((images / name).read_bytes()).decode()
    ev = {"name": name, "contentBase64": content}
    inspect = call(pipe, "inspect", ev)
    thumb = call(pipe, "thumbnail", {**ev, "inspect": inspect})
    hist = call(pipe, "histogram", {**ev, "inspect": inspect})
    out = call(pipe, "classify", {"inspect": inspect, "thumbnail": thumb, "histogram": hist})
    assert out["labels"] == labels
    png = Image.open(io.BytesIO(base64.b64decode(next(iter(out["files"].values())))))
    assert png.format == "PNG" and max(png.size) <= 256


def test_a_dropped_image_becomes_an_outbox_thumbnail(pipe: ServerProcess, images: Path,
                                                     tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    pipe.client.create_trigger("thumbs", {
        "target": {"function": "img-thumbnail"},
        "watch": {"path": str(inbox), "patterns": ["*.jpg", "*.png"]},
        "sink": {"directory": str(outbox)}})
    time.sleep(0.5)
    (inbox / "tower.jpg").write_bytes((images / "tower.jpg").read_bytes())
    wait_for((outbox / "tower.thumb.png").exists, 60, "the thumbnail in the outbox")
    wait_for((outbox / "tower.jpg.json").exists, 10, "the result in the outbox")
    thumb = Image.open(outbox / "tower.thumb.png")
    assert thumb.size == (171, 256)  # 320x480 as displayed (EXIF orientation 6), scaled
    doc = json.loads((outbox / "tower.jpg.json").read_text())
    size = (outbox / "tower.thumb.png").stat().st_size
    assert doc["files"] == {"tower.thumb.png": {"file": "tower.thumb.png", "size": size}}
    pipe.client.delete_trigger("thumbs", missing_ok=True)
