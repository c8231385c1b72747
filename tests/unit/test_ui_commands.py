"""`allinone status` and `function get`'s pod table: what they print from the API's JSON."""

from __future__ import annotations

from allinone.objects import rfc3339
from allinone.ui.commands import render_pods, render_status


def test_render_status_lists_components_pods_and_budget() -> None:
    st = {
        "version": "0.1.0", "stateDir": "/s", "instance": "abc",
        "components": [
            {"name": "server", "state": "up", "version": "0.1.0",
             "address": "http://127.0.0.1:8080", "pid": 7, "cpuSeconds": 1.25,
             "memoryBytes": 80 * 1048576},
            {"name": "etcd", "state": "down", "detail": "ConnectionRefused", "version": "",
             "address": "http://127.0.0.1:2379"},
        ],
        "pods": {"total": 3, "byFunction": {"b": 1, "a": 2}, "byPhase": {}},
        "functions": 2,
        "budget": {"podMemoryMiB": 1000, "usedMiB": 512, "maxPodsPerFunction": 100},
    }
    out = render_status(st)
    assert "state dir /s" in out
    server = next(line for line in out.splitlines() if line.startswith("server"))
    assert "up" in server and "1.2" in server and "80.0 MiB" in server and " 7 " in server
    etcd = next(line for line in out.splitlines() if line.startswith("etcd"))
    assert "down (ConnectionRefused)" in etcd
    assert "pods 3 (a 2, b 1)" in out
    assert "512 of 1000 MiB used" in out


def test_render_pods_shows_in_flight_usage_restarts_or_a_dash() -> None:
    pods = [
        {"metadata": {"name": "f-1", "creationTimestamp": rfc3339(100.0)},
         "status": {"phase": "Running", "inFlight": 4, "restartCount": 2,
                    "usage": {"cpuPercent": 12.345, "cpuSeconds": 1.0,
                              "memoryBytes": 3 * 1048576, "sampledAt": rfc3339(130.0)}}},
        {"metadata": {"name": "f-2", "creationTimestamp": rfc3339(120.0)},
         "status": {"phase": "Pending", "inFlight": 0, "restartCount": 0}},
        {"metadata": {"name": "f-3"}, "status": {}},  # an older server: fields missing
    ]
    lines = render_pods(pods, now=130.0).splitlines()
    assert lines[0].split() == ["POD", "PHASE", "AGE", "IN-FLIGHT", "CPU", "%", "MEMORY",
                                "RESTARTS"]
    assert lines[1].split() == ["f-1", "Running", "30s", "4", "12.3", "3.0", "MiB", "2"]
    assert lines[2].split() == ["f-2", "Pending", "10s", "0", "-", "-", "0"]
    assert lines[3].split() == ["f-3", "?", "-", "-", "-", "-", "-"]
