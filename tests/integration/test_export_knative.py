"""Export to Knative end to end (issue 13): the exported Service's container, run under
plain Docker the way Knative runs it (PORT set, TCP, no allinone environment), answers
POST / and GET /healthz; ``--push-to`` copies the image with its digest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml

from allinone.testing import FIXTURES, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.integration

SPEC = {
    "env": {"GREETING": "hi"},
    "timeoutSeconds": 20,
    "resources": {"memoryMiB": 128, "cpus": 0.5},
    "scaling": {"minScale": 0, "maxScale": 3, "metric": "rps", "target": 5,
                "stableWindowSeconds": 30, "scaleDownDelaySeconds": 10, "activationScale": 2,
                "targetBurstCapacity": -1, "scaleToZeroPodRetentionSeconds": 5},
}


def export(server: ServerProcess, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "allinone.cli", "--server", server.url,
         f"--token={server.token()}", "function", "export", *args], capture_output=True, text=True,
        timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_exported_service_runs_as_knative_runs_it(server: ServerProcess,
                                                  tmp_path: Path) -> None:
    assert server.deploy("kn-add", FIXTURES / "add.py", spec=SPEC).status_code == 201
    source = server.get("kn-add")["status"]["image"]
    digest = source.split("@")[1]

    out_file = tmp_path / "kn.yaml"
    export(server, "kn-add", "--format", "knative", "-o", str(out_file),
           "--push-to", f"{server.registry}/exported")
    docs = [d for d in yaml.safe_load_all(out_file.read_text()) if d]
    [svc] = docs
    ann = svc["spec"]["template"]["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/metric"] == "rps"
    assert ann["autoscaling.knative.dev/window"] == "30s"
    [container] = svc["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    # Copied with its digest kept, and the copy is really there.
    assert image == f"{server.registry}/exported/kn-add@{digest}"
    resp = requests.head(f"http://{server.registry}/v2/exported/kn-add/manifests/{digest}",
                         headers={"Accept": "application/vnd.docker.distribution.manifest"
                                            ".v2+json, application/vnd.oci.image.manifest"
                                            ".v1+json"}, timeout=10)
    assert resp.status_code == 200

    # Run it as Knative would: its env plus PORT, TCP, the limits, nothing of allinone.
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env["PORT"] = "8080"
    limits = container["resources"]["limits"]
    assert limits == {"memory": "128Mi", "cpu": "500m"}
    port = free_port()
    client = docker.from_env()
    c: Any = None
    try:
        c = client.containers.run(
            image, detach=True, environment=env, ports={"8080/tcp": ("127.0.0.1", port)},
            mem_limit="128m", nano_cpus=500_000_000,
            labels={"allinone.managed": "1", "allinone.instance": server.instance(),
                    "allinone.test": "export-knative"})
        base = f"http://127.0.0.1:{port}"
        probe = container["readinessProbe"]["httpGet"]["path"]

        def ready() -> bool:
            try:
                return requests.get(base + probe, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 30, "the exported container to answer its readiness probe")
        r = requests.post(base + "/", json={"x": 3, "y": 5}, timeout=10)
        assert r.status_code == 200 and r.json() == 8
    finally:
        if c is not None:
            c.remove(force=True)
        client.close()


def test_export_all_and_errors(server: ServerProcess) -> None:
    assert server.deploy("kn-one", FIXTURES / "add.py").status_code == 201
    text = export(server, "--all")
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(text) if d]
    assert "kn-one" in names
    assert "no Knative Serving equivalent" in text
    out = subprocess.run([sys.executable, "-m", "allinone.cli", "--server", server.url,
                          f"--token={server.token()}", "function", "export", "no-such-fn"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no-such-fn" in out.stderr, out.stderr


def test_push_without_mount_uploads_every_blob(server: ServerProcess) -> None:
    # The same registry would mount blobs; mount=False takes the upload path a remote
    # registry takes, and the digest is still kept.
    from allinone.export.registry import copy_image

    assert server.deploy("kn-up", FIXTURES / "add.py").status_code == 201
    source = server.get("kn-up")["status"]["image"]
    ref = copy_image(source, f"{server.registry}/uploaded", "kn-up", mount=False)
    assert ref == f"{server.registry}/uploaded/kn-up@{source.split('@')[1]}"
    tags = requests.get(f"http://{server.registry}/v2/uploaded/kn-up/tags/list", timeout=10)
    assert tags.json()["tags"] == ["latest"]
    client = docker.from_env()
    try:
        image = client.images.pull(ref)
        assert ref in image.attrs["RepoDigests"]
        client.images.remove(ref)  # only the reference this test pulled
    finally:
        client.close()
