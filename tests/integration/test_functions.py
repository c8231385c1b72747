"""End to end on real etcd, registry and Docker: deploy, invoke, scale to zero and back,
dependencies, logs and delete (issue 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration

FAST_ZERO = {"scaling": {"scaleToZeroGracePeriodSeconds": 2, "stableWindowSeconds": 6}}


def test_deploy_invoke_scale_to_zero_and_back(server: ServerProcess) -> None:
    resp = server.deploy("add", FIXTURES / "add.py", spec=FAST_ZERO)
    assert resp.status_code == 201, resp.text
    fn = server.get("add")
    assert fn["status"]["phase"] == "Ready"
    assert fn["status"]["image"].startswith(f"{server.registry}/allinone/add@sha256:")
    assert server.replicaset("add")["spec"]["replicas"] == 0
    assert server.containers("add", standby=False) == []

    r = server.invoke("add", {"x": 3, "y": 5})
    assert r.status_code == 200, r.text
    assert r.json() == 8
    # The first call scaled the ReplicaSet from 0 to 1.
    assert server.replicaset("add")["spec"]["replicas"] == 1
    (pod,) = server.pods("add")
    assert pod["status"]["phase"] == "Running" and pod["status"]["ready"] is True
    (container,) = server.containers("add")
    labels = container.labels
    assert labels["allinone.function"] == "add"
    assert labels["allinone.pod"] == pod["metadata"]["name"]
    host_config = container.attrs["HostConfig"]
    assert host_config["NetworkMode"] == "none"  # reached over its socket only
    assert host_config["Memory"] == 256 * 1024 * 1024
    assert host_config["NanoCpus"] == 1_000_000_000
    assert host_config["PidsLimit"] and host_config["PidsLimit"] > 0

    # No requests for the grace period: back to zero, no labelled container left but
    # the standby (by default frozen: started, healthy, paused).
    wait_for(lambda: server.replicaset("add")["spec"]["replicas"] == 0, 30, "scale to zero")
    wait_for(lambda: server.containers("add", all=True, standby=False) == [], 30,
             "containers removed")
    wait_for(lambda: [c.status for c in server.containers("add", all=True)]
             == [server.standby_status], 30, "one standby container")
    wait_for(lambda: server.pods("add") == [], 10, "pod objects removed")
    assert not Path(pod["status"]["socket"]).parent.exists()  # its socket directory went too

    r = server.invoke("add", {"x": 10, "y": -3})
    assert r.status_code == 200 and r.json() == 7


def test_function_errors_reach_the_caller_and_the_logs(server: ServerProcess) -> None:
    assert server.deploy("raises", FIXTURES / "raises.py").status_code == 201
    r = server.invoke("raises", {})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "FunctionError" and "ValueError" in err["message"]
    assert "Traceback" not in r.text  # tracebacks go to the logs, not to clients
    logs = server.client.logs("raises")
    assert "Traceback" in logs and "ValueError" in logs

    r = server.invoke("raises", [1, 2])
    assert r.status_code == 400 and "object" in r.json()["error"]["message"]


def test_bad_arguments_and_unknown_function(server: ServerProcess) -> None:
    assert server.deploy("add-args", FIXTURES / "add.py").status_code == 201
    r = server.invoke("add-args", {"x": 1})
    assert r.status_code == 400 and "y" in r.json()["error"]["message"]
    r = server.http.post(server.url + "/function/add-args", data=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = server.invoke("no-such-function", {})
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"


def test_zip_with_requirements(server: ServerProcess) -> None:
    assert server.deploy("withdeps", FIXTURES / "withdeps.zip").status_code == 201
    r = server.invoke("withdeps", {"n": 1234567})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == "1.2 MB"


def test_realistic_package_handler(server: ServerProcess) -> None:
    spec = {"handler": "app.main.handle"}
    assert server.deploy("realistic", FIXTURES / "realistic.zip", spec=spec).status_code == 201
    r = server.invoke("realistic", {"text": "the cat and the hat and the bat", "top": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["words"] == 8 and out["unique_words"] == 5
    assert [w["word"] for w in out["top_words"]] == ["cat", "hat"]


def test_delete_removes_everything(server: ServerProcess) -> None:
    assert server.deploy("todelete", FIXTURES / "add.py").status_code == 201
    assert server.invoke("todelete", {"x": 1, "y": 1}).json() == 2
    assert server.registry_tags("todelete")
    assert server.containers("todelete")

    r = server.delete("todelete")
    assert r.status_code == 200
    assert server.gone("todelete")
    wait_for(lambda: server.pods("todelete") == [], 30, "pods deleted")
    wait_for(lambda: server.containers("todelete", all=True) == [], 30, "containers removed")
    wait_for(lambda: server.registry_tags("todelete") == [], 30, "image tags removed")
    assert server.delete("todelete").status_code == 404
    assert server.invoke("todelete", {}).status_code == 404


def test_update_spec_only_keeps_pods(server: ServerProcess) -> None:
    assert server.deploy("keep", FIXTURES / "add.py").status_code == 201
    assert server.invoke("keep", {"x": 1, "y": 1}).status_code == 200
    before = {p["metadata"]["name"] for p in server.pods("keep")}
    assert before, "no pod after the first call: nothing to keep"
    r = server.update("keep", spec={"scaling": {"maxScale": 3}})
    assert r.status_code == 200, r.text
    fn = server.wait_phase("keep", "Ready")
    assert fn["metadata"]["generation"] == 2 and fn["spec"]["scaling"]["maxScale"] == 3
    assert {p["metadata"]["name"] for p in server.pods("keep")} == before


def test_request_during_first_build_waits_for_it(server: ServerProcess) -> None:
    resp = server.deploy("early", FIXTURES / "add.py", wait=False)
    assert resp.status_code == 201
    r = server.invoke("early", {"x": 20, "y": 22})  # sent while the image is building
    assert r.status_code == 200, r.text
    assert r.json() == 42


def test_pod_that_crashes_on_import_fails_fast_with_logs(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    # Valid syntax, handler defined, but the import fails inside the container.
    bad = tmp_path / "crash.py"
    bad.write_text("import no_such_module_anywhere\n\ndef run():\n    return 1\n")
    assert server.deploy("crash", bad, spec={"timeoutSeconds": 60}).status_code == 201
    t0 = time.monotonic()
    r = server.invoke("crash", {})
    assert r.status_code == 503, r.text
    assert time.monotonic() - t0 < 30  # not the 60 s timeout
    err = r.json()["error"]
    assert err["code"] == "PodFailed" and "allinone logs crash" in err["message"]
    logs = server.client.logs("crash")
    assert "no_such_module_anywhere" in logs
    assert server.delete("crash").status_code == 200
    wait_for(lambda: server.containers("crash", all=True) == [], 30, "crash containers removed")
