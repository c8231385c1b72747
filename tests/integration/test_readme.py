"""What the README promises over HTTP and at start-up, checked against live servers:
the /metrics names (and that a cold start is counted), 504 past ``timeoutSeconds``,
``PUT`` with a JSON spec, the read views, ``serve`` refusing to start with a one-line
reason, and ``--etcd``/``--registry`` pointing at services that already run.

The CLI promises are in test_cli.py."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from allinone.services.etcd import EtcdProcess
from allinone.services.registry import RegistryProcess
from allinone.testing import FIXTURES, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.integration

# The first build of a fresh server also pushes the base image to its registry: on a
# busy 2-core machine that alone can take minutes.
FIRST_BUILD = 300.0

README_METRICS = {
    # sample name: the labels it carries
    "allinone_invocations_total": {"function", "code"},
    "allinone_request_latency_seconds_count": {"function"},
    "allinone_cold_starts_total": {"function"},
    "allinone_cold_start_latency_seconds_count": {"function"},
    "allinone_desired_replicas": {"function"},
    "allinone_ready_replicas": {"function"},
    "allinone_queue_depth": {"function"},
    "allinone_panic_mode": {"function"},
    "allinone_builds_total": {"result"},
}


def samples(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = server.http.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(snapshot: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return snapshot.get((name, frozenset(labels.items())), 0.0)


def test_metrics_names_and_the_cold_start_count(server: ServerProcess) -> None:
    assert server.deploy("rm-metrics", FIXTURES / "add.py", wait=False).status_code == 201
    server.wait_phase("rm-metrics", "Ready", timeout=FIRST_BUILD)
    wait_for(lambda: server.get("rm-metrics")["status"].get("readyReplicas") == 0, 30,
             "no ready pod before the first call")
    before = samples(server)
    assert server.invoke("rm-metrics", {"x": 1, "y": 2}).json() == 3  # a cold start
    assert server.invoke("rm-metrics", {"x": 2, "y": 2}).json() == 4  # warm
    after = samples(server)
    # Hand-made bug "the cold-start metric never incremented": exactly one cold start.
    cold = "allinone_cold_starts_total"
    assert value(after, cold, function="rm-metrics") - \
        value(before, cold, function="rm-metrics") == 1
    assert value(after, "allinone_cold_start_latency_seconds_count", function="rm-metrics") - \
        value(before, "allinone_cold_start_latency_seconds_count", function="rm-metrics") == 1
    assert value(after, "allinone_invocations_total", function="rm-metrics", code="200") - \
        value(before, "allinone_invocations_total", function="rm-metrics", code="200") == 2
    assert value(after, "allinone_builds_total", result="built") + \
        value(after, "allinone_builds_total", result="cached") >= 1
    for name, labels in README_METRICS.items():
        found = [dict(lab) for (n, lab) in after if n == name]
        assert found, f"/metrics has no {name}"
        assert any(set(lab) == labels for lab in found), (name, found)


def test_metrics_names_of_pods_processes_and_triggers(server: ServerProcess) -> None:
    """The README's resource and trigger metrics, by name and labels, from a live server."""
    api = server.client
    spec = {"scaling": {"minScale": 1}}
    assert server.deploy("rm-usage", FIXTURES / "add.py", spec=spec).status_code == 201
    server.wait_phase("rm-usage", "Ready", timeout=FIRST_BUILD)
    api.create_trigger("rm-tick", {"target": {"function": "rm-usage"},
                                   "schedule": "@every 1s"})
    try:
        wait_for(lambda: api.trigger("rm-tick").get("status", {}).get("fires", 0) >= 1, 60,
                 "the schedule to fire")

        def has_pod_usage() -> bool:
            return any(n == "allinone_pod_memory_bytes" and dict(lab).get("function") ==
                       "rm-usage" for (n, lab) in samples(server))
        wait_for(has_pod_usage, 60, "the pod sampler to sample rm-usage's pod")
        r = server.http.get(server.url + "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
    finally:
        api.delete_trigger("rm-tick", missing_ok=True)
        server.delete("rm-usage")
    # Counters are listed without their _total suffix by the parser.
    for name in ("allinone_trigger_fires", "allinone_trigger_failures",
                 "allinone_trigger_missed", "allinone_trigger_delivery_seconds",
                 "allinone_pod_cpu_seconds", "allinone_pod_memory_bytes",
                 "allinone_process_cpu_seconds", "allinone_process_resident_memory_bytes"):
        assert name in families, f"/metrics has no {name}"

    def labelled(family: str, sample: str) -> list[dict[str, str]]:
        return [dict(s.labels) for s in families[family].samples if s.name == sample]
    assert {"trigger": "rm-tick"} in labelled("allinone_trigger_fires",
                                              "allinone_trigger_fires_total")
    assert {"trigger": "rm-tick"} in labelled("allinone_trigger_delivery_seconds",
                                              "allinone_trigger_delivery_seconds_count")
    for family, sample in (("allinone_pod_cpu_seconds", "allinone_pod_cpu_seconds_total"),
                           ("allinone_pod_memory_bytes", "allinone_pod_memory_bytes")):
        rows = [lab for lab in labelled(family, sample) if lab.get("function") == "rm-usage"]
        assert rows and all(set(lab) == {"function", "pod"} for lab in rows), (family, rows)
    components = {lab["component"] for lab in labelled(
        "allinone_process_resident_memory_bytes", "allinone_process_resident_memory_bytes")}
    assert {"server", "etcd", "registry"} <= components, components
    assert {lab["component"] for lab in labelled(
        "allinone_process_cpu_seconds", "allinone_process_cpu_seconds_total")} >= components


def test_timeout_is_504(server: ServerProcess) -> None:
    spec = {"timeoutSeconds": 1, "scaling": {"minScale": 1}}
    assert server.deploy("rm-timeout", FIXTURES / "sleep.py", spec=spec).status_code == 201
    wait_for(lambda: server.get("rm-timeout")["status"].get("readyReplicas") == 1, 60,
             "a ready pod")
    assert server.invoke("rm-timeout", {"ms": 10}).status_code == 200
    r = server.invoke("rm-timeout", {"ms": 3000})
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["code"] == "Timeout" and "timeoutSeconds" in err["message"]
    assert server.delete("rm-timeout").status_code == 200


def test_put_with_a_json_spec(server: ServerProcess) -> None:
    assert server.deploy("rm-put", FIXTURES / "add.py").status_code == 201
    r = server.http.put(server.url + "/api/v1/functions/rm-put",
                        json={"spec": {"timeoutSeconds": 30, "env": {"MODE": "json"}}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["generation"] == 2
    fn = server.wait_phase("rm-put", "Ready")
    assert fn["spec"]["timeoutSeconds"] == 30 and fn["spec"]["env"] == {"MODE": "json"}
    assert fn["spec"]["source"]["filename"] == "add.py"  # the source is kept
    assert server.invoke("rm-put", {"x": 2, "y": 3}).json() == 5
    rs = server.replicaset("rm-put")
    assert rs["spec"]["template"]["env"] == {"MODE": "json"}
    r = server.http.put(server.url + "/api/v1/functions/rm-put", json={"nospec": {}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
    assert server.delete("rm-put").status_code == 200


def test_list_views(server: ServerProcess) -> None:
    assert server.deploy("rm-views", FIXTURES / "add.py").status_code == 201
    assert server.invoke("rm-views", {"x": 1, "y": 1}).status_code == 200
    r = server.http.get(server.url + "/api/v1/functions")
    assert r.status_code == 200
    listed = {f["metadata"]["name"]: f for f in r.json()["items"]}
    assert listed["rm-views"]["status"]["phase"] == "Ready"
    assert "autoscaler" in listed["rm-views"]["status"]
    r = server.http.get(server.url + "/api/v1/namespaces/serverless/replicasets")
    assert r.status_code == 200
    assert "rm-views" in [rs["metadata"]["name"] for rs in r.json()["items"]]
    rs = server.replicaset("rm-views")
    assert rs["kind"] == "ReplicaSet" and rs["metadata"]["namespace"] == "serverless"
    assert rs["spec"]["replicas"] >= 1
    pods = server.pods("rm-views")
    assert pods and all(p["spec"]["function"] == "rm-views" for p in pods)
    r = server.http.get(server.url + "/api/v1/namespaces/serverless/pods")
    everything = {p["metadata"]["name"] for p in r.json()["items"]}
    assert {p["metadata"]["name"] for p in pods} <= everything
    assert server.delete("rm-views").status_code == 200


# -- serve refusing to start ------------------------------------------------------


def serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allinone.cli", "serve", "--state-dir", str(tmp),
         "--etcd-port", str(free_port(pair=True)), "--registry-port", str(free_port()), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ})


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_serve_refuses_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    result = serve(tmp_path, "--port", str(taken_port))
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1] == (
        f"error: port {taken_port} on 127.0.0.1 is in use (by another allinone serve?), and "
        "the API needs it: stop it or pass --port")
    assert not (tmp_path / "etcd").exists()  # refused before starting anything


def test_serve_refuses_a_missing_base_image(tmp_path: Path) -> None:
    result = serve(tmp_path, "--port", str(free_port()),
                   "--base-image", "allinone/no-such-image:test")
    assert result.returncode == 1, result
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: the base image allinone/no-such-image:test is missing")
    assert last.endswith("run `allinone setup` (it pulls or builds it)")


# -- --etcd and --registry ----------------------------------------------------------


def test_serve_uses_running_etcd_and_registry(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.mkdir()
    etcd = EtcdProcess(services / "etcd", free_port(pair=True), log_path=services / "etcd.log")
    registry = RegistryProcess(services, free_port())
    asyncio.run(etcd.start())
    try:
        asyncio.run(registry.start())
        srv = ServerProcess(tmp_path / "state",
                            extra_args=("--etcd", etcd.url, "--registry", registry.address))
        srv.start()
        try:
            assert srv.deploy("rm-ext", FIXTURES / "add.py", wait=False).status_code == 201
            srv.wait_phase("rm-ext", "Ready", timeout=FIRST_BUILD)
            assert srv.invoke("rm-ext", {"x": 4, "y": 4}).json() == 8
            # The image went to the registry we started, not to an embedded one.
            srv_registry = srv.registry_port
            srv.registry_port = registry.port
            assert srv.registry_tags("rm-ext")
            srv.registry_port = srv_registry
            # No embedded etcd or registry was started in the server's state dir.
            assert not (tmp_path / "state" / "etcd").exists()
            assert not (tmp_path / "state" / "registry").exists()
            assert srv.delete("rm-ext").status_code == 200
            wait_for(lambda: srv.containers("rm-ext", all=True) == [], 30, "pods removed")
        finally:
            srv.stop()
            srv.cleanup_containers()
        # The function's objects lived in our etcd: a new server on it sees the same state.
    finally:
        asyncio.run(registry.stop())
        asyncio.run(etcd.stop())
