"""The image pipeline on a real server: the four Pillow functions built from their
requirements.txt, called on the generated test images, and a dropped image turned into
an outbox thumbnail by a file trigger with a sink."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from allinone.cli import read_source
from allinone.testing import ROOT, ServerProcess, wait_for

pytestmark = pytest.mark.integration

PIPE = ROOT / "fixtures" / "imagepipe"
FUNCTIONS = ("inspect", "thumbnail", "histogram", "classify")


def deploy_dir(srv: ServerProcess, name: str, folder: Path) -> None:
    filename, data = read_source(str(folder))
    resp = srv.http.post(srv.url + "/api/v1/functions", data={"name": name},
                         files={"source": (filename, data)})
    assert resp.status_code == 201, resp.text


@pytest.fixture(scope="module")
def pipe(server: ServerProcess) -> ServerProcess:
    for fn in FUNCTIONS:
        deploy_dir(server, f"img-{fn}", PIPE / "functions" / fn)
    for fn in FUNCTIONS:
        server.wait_phase(f"img-{fn}", "Ready", timeout=300)
    return server


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("make_images", PIPE / "make_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("images")
    module.make(out, large=True)
    return out


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
    resp = pipe.http.post(pipe.url + "/api/v1/triggers", json={"name": "thumbs", "spec": {
        "target": {"function": "img-thumbnail"},
        "watch": {"path": str(inbox), "patterns": ["*.jpg", "*.png"]},
        "sink": {"directory": str(outbox)}}})
    assert resp.status_code == 201, resp.text
    time.sleep(0.5)
    (inbox / "tower.jpg").write_bytes((images / "tower.jpg").read_bytes())
    wait_for((outbox / "tower.thumb.png").exists, 60, "the thumbnail in the outbox")
    wait_for((outbox / "tower.jpg.json").exists, 10, "the result in the outbox")
    thumb = Image.open(outbox / "tower.thumb.png")
    assert thumb.size == (171, 256)  # 320x480 as displayed (EXIF orientation 6), scaled
    doc = json.loads((outbox / "tower.jpg.json").read_text())
    size = (outbox / "tower.thumb.png").stat().st_size
    assert doc["files"] == {"tower.thumb.png": {"file": "tower.thumb.png", "size": size}}
    pipe.http.delete(pipe.url + "/api/v1/triggers/thumbs")


def test_dropped_images_run_the_workflow_into_the_outbox(pipe: ServerProcess, images: Path,
                                                         tmp_path: Path) -> None:
    """The whole application: a file trigger runs imagepipe.json through the workflow
    engine for every new image; the sink writes the result and the thumbnail; the
    over-size image ends in the Fail state with its cause."""
    definition = json.loads((PIPE / "imagepipe.json").read_text())
    resp = pipe.http.post(pipe.url + "/api/v1/workflows",
                          json={"name": "imagepipe", "definition": definition})
    assert resp.status_code == 201, resp.text
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    resp = pipe.http.post(pipe.url + "/api/v1/triggers", json={"name": "imagepipe", "spec": {
        "target": {"workflow": "imagepipe"},
        "watch": {"path": str(inbox), "patterns": ["*.jpg", "*.png", "*.gif"]},
        "sink": {"directory": str(outbox)}}})
    assert resp.status_code == 201, resp.text
    time.sleep(0.5)
    expected = {"sunrise.jpg": ["bright", "landscape"], "tower.jpg": ["normal", "portrait"],
                "night.png": ["dark", "landscape"], "snow.gif": ["bright", "landscape"]}
    for name in [*expected, "large.png"]:
        (inbox / name).write_bytes((images / name).read_bytes())
    for name, labels in expected.items():
        stem = name.rsplit(".", 1)[0]
        wait_for((outbox / f"{name}.json").exists, 180, f"{name}.json in the outbox")
        doc = json.loads((outbox / f"{name}.json").read_text())
        assert doc["labels"] == labels, doc
        thumb_file = doc["files"][f"{stem}.thumb.png"]["file"]
        thumb = Image.open(outbox / thumb_file)
        assert thumb.format == "PNG" and max(thumb.size) == 256
    assert Image.open(outbox / "tower.thumb.png").size == (171, 256)

    def failed() -> dict[str, Any] | None:
        items = pipe.http.get(pipe.url + "/api/v1/triggers/imagepipe/events",
                              params={"limit": 100}).json()["items"]
        return next((e for e in items if "large.png" in json.dumps(e.get("input"))
                     and e.get("status") == "Failed"), None)
    bad = wait_for(failed, 60, "the large image's failed delivery")
    assert "ImageTooLarge" in json.dumps(bad) and "scale it down" in json.dumps(bad), bad
    assert not (outbox / "large.png.json").exists()
    execs = pipe.http.get(pipe.url + "/api/v1/workflows/imagepipe/executions").json()["items"]
    assert sorted(e["status"] for e in execs) == ["FAILED"] + ["SUCCEEDED"] * 4, execs
    pipe.http.delete(pipe.url + "/api/v1/triggers/imagepipe")
