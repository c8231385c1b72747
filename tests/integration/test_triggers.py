"""Triggers on a real server: schedules, file drops, the sink, deletion and restarts."""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from allinone.objects import parse_rfc3339
from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def create(srv: ServerProcess, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    resp = srv.http.post(srv.url + "/api/v1/triggers", json={"name": name, "spec": spec})
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def trigger(srv: ServerProcess, name: str) -> dict[str, Any]:
    resp = srv.http.get(srv.url + f"/api/v1/triggers/{name}")
    resp.raise_for_status()
    out: dict[str, Any] = resp.json()
    return out


def events(srv: ServerProcess, name: str) -> list[dict[str, Any]]:
    resp = srv.http.get(srv.url + f"/api/v1/triggers/{name}/events", params={"limit": 100})
    resp.raise_for_status()
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def invocations(srv: ServerProcess, function: str) -> float:
    text = srv.http.get(srv.url + "/metrics").text
    m = re.search(rf'^allinone_invocations_total{{code="200",function="{function}"}} (\S+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def echo(server: ServerProcess) -> str:
    resp = server.deploy("echo", FIXTURES / "echo.py")
    assert resp.status_code == 201, resp.text
    return "echo"


def test_bad_triggers_are_refused_naming_the_field(server: ServerProcess, tmp_path: Path) -> None:
    cases = [
        ({"target": {"function": "echo"}, "schedule": "*/5 * * *"}, "spec.schedule"),
        ({"target": {"function": "echo"}, "schedule": "61 * * * *"}, "spec.schedule"),
        ({"target": {"function": "echo"}, "watch": {"path": str(tmp_path / "nope")}},
         "spec.watch.path"),
        ({"target": {"queue": "echo"}, "schedule": "@every 1s"}, "spec.target"),
        ({"target": {"function": "echo"}, "watch": {"path": str(server.state_dir)}},
         "spec.watch.path"),
        ({"target": {"function": "echo"}, "schedule": "@every 1s",
          "sink": {"directory": str(tmp_path / "missing")}}, "spec.sink.directory"),
    ]
    for spec, field in cases:
        resp = server.http.post(server.url + "/api/v1/triggers", json={"name": "bad", "spec": spec})
        assert resp.status_code == 400, (spec, resp.text)
        assert field in resp.json()["error"]["message"], resp.text
    resp = server.http.post(server.url + "/api/v1/triggers", data=b"nope")
    assert resp.status_code == 400 and "JSON object" in resp.json()["error"]["message"]
    assert server.http.get(server.url + "/api/v1/triggers/nope").status_code == 404
    assert server.http.get(server.url + "/api/v1/triggers").json()["items"] == []


def test_every_second_schedule_fires_and_stops_when_deleted(server: ServerProcess,
                                                            echo: str) -> None:
    server.invoke(echo, {})  # warm: the first fire should not wait for a cold start
    create(server, "tick", {"target": {"function": echo}, "schedule": "@every 1s"})
    resp = server.http.post(server.url + "/api/v1/triggers",
                            json={"name": "tick", "spec": {"target": {"function": echo},
                                                           "schedule": "@every 1s"}})
    assert resp.status_code == 409
    def succeeded() -> list[dict[str, Any]] | None:
        # The newest fire may still be in flight (Pending): wait for three that ended.
        done = [e for e in events(server, "tick") if e["status"] == "Succeeded"]
        return done if len(done) >= 3 else None

    assert len(wait_for(succeeded, 15, "three fires delivered")) >= 3
    t = trigger(server, "tick")
    assert t["status"]["fires"] >= 3 and t["status"]["failures"] == 0
    assert t["status"]["lastStatus"] == "Succeeded" and t["status"]["nextFireTime"]
    fired = events(server, "tick")
    jitter = [parse_rfc3339(e["input"]["firedTime"]) - parse_rfc3339(e["input"]["scheduledTime"])
              for e in fired]
    assert all(j >= 0 for j in jitter)
    print(f"\nschedule jitter (fired - scheduled), ms: "
          f"{sorted(round(j * 1000, 1) for j in jitter)}")
    scheduled = sorted(parse_rfc3339(e["input"]["scheduledTime"]) for e in fired)
    # Scheduled times are whole intervals apart (a late loop skips a time, never shifts it).
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert all(g >= 1 - 1e-3 and abs(g - round(g)) < 1e-3 for g in gaps), gaps
    assert server.http.delete(server.url + "/api/v1/triggers/tick").status_code == 200
    time.sleep(0.5)  # a call already in flight may still finish
    before = invocations(server, echo)
    time.sleep(2.5)
    assert invocations(server, echo) == before
    assert server.http.get(server.url + "/api/v1/triggers/tick").status_code == 404


def test_a_dropped_file_invokes_the_target_once_and_the_sink_writes_it(
        server: ServerProcess, echo: str, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    server.invoke(echo, {})
    create(server, "drop", {"target": {"function": echo},
                            "watch": {"path": str(inbox), "patterns": ["*.txt"]},
                            "sink": {"directory": str(outbox)}})
    wait_for(lambda: trigger(server, "drop")["metadata"]["generation"] == 1, 5, "trigger")
    time.sleep(0.5)  # the watch starts right after the trigger is seen
    delays = []
    for i in range(5):
        payload = f"hello {i}\n".encode() * (i + 1)
        path = inbox / f"hello{i}.txt"
        path.write_bytes(payload)
        written = time.time()
        (inbox / f"ignored{i}.bin").write_bytes(b"x")
        result_file = outbox / f"hello{i}.txt.json"
        wait_for(result_file.exists, 30, f"{result_file.name} in the outbox")
        doc = json.loads(result_file.read_text())
        got = doc["received"]
        assert base64.b64decode(got["contentBase64"]) == payload
        assert got["event"] == "created" and got["name"] == path.name
        assert got["size"] == len(payload) and got["path"] == str(path)
        delays.append(doc["startedAt"] - written)
    print(f"\nfile write -> function start, ms: {sorted(round(d * 1000, 1) for d in delays)}")
    evs = events(server, "drop")
    assert sorted(e["input"]["name"] for e in evs) == [f"hello{i}.txt" for i in range(5)]
    assert all(e["status"] == "Succeeded" for e in evs)
    assert trigger(server, "drop")["status"]["fires"] == 5
    server.http.delete(server.url + "/api/v1/triggers/drop")


def test_restart_neither_loses_nor_duplicates_file_events(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state")
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    srv.start()
    try:
        assert srv.deploy("echo", FIXTURES / "echo.py", wait=False).status_code == 201
        srv.wait_phase("echo", "Ready", timeout=600)  # a new registry: the base is pushed
        create(srv, "drop", {"target": {"function": "echo"}, "watch": {"path": str(inbox)},
                             "sink": {"directory": str(outbox)}})
        time.sleep(0.5)
        (inbox / "before.txt").write_bytes(b"1")
        wait_for((outbox / "before.txt.json").exists, 60, "the first file delivered")
        srv.stop()
        (inbox / "while-down.txt").write_bytes(b"2")
        srv.start()
        wait_for((outbox / "while-down.txt.json").exists, 60, "the file dropped while down")
        (inbox / "after.txt").write_bytes(b"3")
        wait_for((outbox / "after.txt.json").exists, 60, "a file dropped after the restart")
        time.sleep(1.0)  # a duplicate would show up by now
        evs = events(srv, "drop")
        assert sorted(e["input"]["name"] for e in evs) == [
            "after.txt", "before.txt", "while-down.txt"]
        assert all(e["status"] == "Succeeded" for e in evs)
        assert trigger(srv, "drop")["status"]["fires"] == 3
    finally:
        srv.stop()
        srv.cleanup_containers()
