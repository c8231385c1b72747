"""Workflows against real functions (issue 11): a chain with a choice, a Map over 20
items, a Parallel, Retry and Catch, the API's errors, and an asynchronous execution that
survives a SIGKILL of the server (everything killed, etcd included) and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration

WF = FIXTURES / "workflows"
FUNCS = WF / "functions"


def ensure_functions(srv: ServerProcess, *names: str) -> None:
    for name in names:
        resp = srv.deploy(name, FUNCS / f"{name}.py", wait=False)
        assert resp.status_code in (201, 409), resp.text
    for name in names:
        # The first build pushes the base image: minutes on a busy shared machine.
        srv.wait_phase(name, "Ready", timeout=400)


def put_workflow(srv: ServerProcess, name: str, definition: dict[str, Any]) -> None:
    resp = srv.http.post(srv.url + "/api/v1/workflows",
                         json={"name": name, "definition": definition})
    if resp.status_code == 409:
        resp = srv.http.put(srv.url + f"/api/v1/workflows/{name}",
                            json={"definition": definition})
    assert resp.status_code in (200, 201), resp.text


def run(srv: ServerProcess, name: str, data: Any) -> dict[str, Any]:
    resp = srv.http.post(srv.url + f"/workflow/{name}", json=data, timeout=180)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def execution(srv: ServerProcess, name: str, eid: str) -> dict[str, Any]:
    resp = srv.http.get(srv.url + f"/api/v1/workflows/{name}/executions/{eid}")
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def task(resource: str, **fields: Any) -> dict[str, Any]:
    if "Next" not in fields:
        fields["End"] = True
    return {"Type": "Task", "Resource": resource, **fields}


def test_chain_and_choice(server: ServerProcess) -> None:
    ensure_functions(server, "inc", "square")
    put_workflow(server, "chain", json.loads((WF / "chain-and-choice.json").read_text()))
    out = run(server, "chain", {"n": 2})
    assert (out["status"], out["output"]) == ("SUCCEEDED", {"size": "small", "n": 9})
    assert run(server, "chain", {"n": 7})["output"] == {"size": "big", "n": 64}
    failed = run(server, "chain", {"n": -1})
    assert (failed["status"], failed["error"]) == ("FAILED", "NotPositive")
    ex = execution(server, "chain", out["executionId"])
    types = [e["type"] for e in ex["events"]]
    assert types[:5] == ["ExecutionStarted", "TaskStateEntered", "TaskScheduled",
                         "TaskSucceeded", "TaskStateExited"]
    assert "ChoiceStateEntered" in types and types[-1] == "ExecutionSucceeded"
    assert ex["input"] == {"n": 2} and ex["startDate"] and ex["stopDate"]
    listed = server.http.get(server.url + "/api/v1/workflows/chain/executions?limit=2").json()
    assert [e["executionId"] for e in listed["items"]] == [failed["executionId"],
                                                          sorted(e["executionId"] for e in
                                                                 listed["items"])[0]]
    assert "continue" in listed
    metrics = server.http.get(server.url + "/metrics").text
    assert 'allinone_workflow_executions_total{status="SUCCEEDED",workflow="chain"}' in metrics


def test_map_over_20_items(server: ServerProcess) -> None:
    ensure_functions(server, "square")
    put_workflow(server, "squares", {"StartAt": "each", "States": {"each": {
        "Type": "Map", "ItemsPath": "$.xs", "MaxConcurrency": 5, "End": True,
        "ItemSelector": {"n.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "sq", "States": {
            "sq": task("square", OutputPath="$.n")}}}}})
    out = run(server, "squares", {"xs": list(range(20))})
    assert (out["status"], out["output"]) == ("SUCCEEDED", [i * i for i in range(20)])
    events = execution(server, "squares", out["executionId"])["events"]
    assert sum(e["type"] == "MapIterationSucceeded" for e in events) == 20


def test_parallel(server: ServerProcess) -> None:
    ensure_functions(server, "inc", "square")
    put_workflow(server, "both", {"StartAt": "p", "States": {"p": {
        "Type": "Parallel", "End": True, "Branches": [
            {"StartAt": "a", "States": {"a": task("inc")}},
            {"StartAt": "b", "States": {"b": task("square")}}]}}})
    assert run(server, "both", {"n": 5})["output"] == [{"n": 6}, {"n": 25}]


def test_retry_catch_and_the_order_example(server: ServerProcess) -> None:
    ensure_functions(server, "flaky", "price")
    put_workflow(server, "orders", yaml.safe_load((WF / "orders.yaml").read_text()))
    order = {"order": "o-1", "flaky": 2,
             "lines": [{"sku": "apple", "qty": 2}, {"sku": "fig", "qty": 1}]}
    out = run(server, "orders", order)
    assert out.get("output") == {"order": "o-1", "lines": 2, "totals": [240, 250],
                             "message": "order o-1 reserved after 3 attempt(s)"}, out
    events = execution(server, "orders", out["executionId"])["events"]
    retried = [e for e in events if e["type"] == "TaskRetried"]
    assert [(e["error"], e["delaySeconds"]) for e in retried] == [
        ("ConnectionError", 1.0), ("ConnectionError", 1.5)]
    # A line that raises inside the Map is caught by the Parallel's Catch.
    out = run(server, "orders", {**order, "order": "o-2", "lines": [{"sku": "durian", "qty": 1}]})
    assert out.get("output") == {"order": "o-2", "rejected": "KeyError", "why": "'durian'"}, out
    assert "TaskCaught" in [e["type"] for e in
                            execution(server, "orders", out["executionId"])["events"]]
    # A function that raised, uncaught: its exception type and message.
    put_workflow(server, "badline", {"StartAt": "p", "States": {
        "p": task("price", Parameters={"sku": "apple", "qty": 0})}})
    out = run(server, "badline", {})
    assert (out["status"], out["error"], out["cause"]) == (
        "FAILED", "ValueError", "quantity must be positive, got 0")
    # A Task naming a function that does not exist: accepted, fails at run time.
    put_workflow(server, "ghost", {"StartAt": "t", "States": {"t": task("no-such-fn")}})
    out = run(server, "ghost", {})
    assert out["error"] == "States.TaskFailed" and "no-such-fn" in out["cause"]


def test_api_errors(server: ServerProcess) -> None:
    bad = {"StartAt": "a", "States": {"a": {"Type": "Pass", "Next": "chek"}}}
    resp = server.http.post(server.url + "/api/v1/workflows",
                            json={"name": "broken", "definition": bad})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == 'States.a.Next: no state named "chek"'
    good = {"StartAt": "a", "States": {"a": {"Type": "Pass", "End": True}}}
    resp = server.http.post(server.url + "/api/v1/workflows",
                            json={"name": "Bad_Name", "definition": good})
    assert resp.status_code == 400
    put_workflow(server, "simple", good)
    resp = server.http.post(server.url + "/api/v1/workflows",
                            json={"name": "simple", "definition": good})
    assert resp.status_code == 409
    assert server.http.post(server.url + "/workflow/nope", json={}).status_code == 404
    resp = server.http.post(server.url + "/workflow/simple", data=b"{not json",
                            headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest"
    resp = server.http.post(server.url + "/workflow/simple?mode=async", json={"k": 1})
    assert resp.status_code == 202
    eid = resp.json()["executionId"]
    wait_for(lambda: execution(server, "simple", eid)["status"] == "SUCCEEDED", 30,
             "the async execution")
    assert execution(server, "simple", eid)["output"] == {"k": 1}
    resp = server.http.put(server.url + "/api/v1/workflows/simple", json={"definition": bad})
    assert resp.status_code == 400
    assert server.http.delete(server.url + "/api/v1/workflows/simple").status_code == 200
    assert server.http.get(server.url + "/api/v1/workflows/simple").status_code == 404
    resp = server.http.get(server.url + f"/api/v1/workflows/simple/executions/{eid}")
    assert resp.status_code == 404


def _kill_everything(srv: ServerProcess) -> None:
    """SIGKILL the server and its etcd and registry: a power cut, nothing shuts down."""
    assert srv.proc is not None
    children = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    srv.proc.kill()
    srv.proc.wait()
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: all(not Path(f"/proc/{p}").exists() for p in children), 30,
             "the embedded services to die")
    srv.proc = None


def test_sigkill_resumes_a_running_execution(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state")
    srv.start()
    try:
        ensure_functions(srv, "inc", "slow")
        put_workflow(srv, "durable", {"StartAt": "first", "TimeoutSeconds": 600, "States": {
            "first": task("inc", Next="nap"),
            "nap": task("slow", Parameters={"n.$": "$.n", "ms": 4000}, Next="last"),
            "last": task("inc")}})
        resp = srv.http.post(srv.url + "/workflow/durable?mode=async", json={"n": 1})
        assert resp.status_code == 202
        eid = resp.json()["executionId"]

        def in_nap() -> bool:
            events = execution(srv, "durable", eid)["events"]
            return any(e["type"] == "TaskStateExited" and e["name"] == "first" for e in events)
        wait_for(in_nap, 60, "the execution to reach the slow task")
        time.sleep(0.5)  # the slow task is in flight
        _kill_everything(srv)
        srv.start()
        wait_for(lambda: execution(srv, "durable", eid)["status"] != "RUNNING", 120,
                 "the resumed execution to finish")
        ex = execution(srv, "durable", eid)
        assert (ex["status"], ex["output"]) == ("SUCCEEDED", {"n": 3}), ex
        types = [(e["type"], e.get("name")) for e in ex["events"]]
        assert ("ExecutionResumed", "nap") in types
        # "first" ran once; "nap" was scheduled again after the restart (at-least-once).
        assert types.count(("TaskScheduled", "first")) == 1
        assert types.count(("TaskScheduled", "nap")) >= 1
    finally:
        srv.stop()
        srv.cleanup_containers()
