"""What a workflow adds per Task state, side by side in one run.

    python -m loadtests.workflow_overhead [--server URL] [--tasks 10] [--runs 30]

Without ``--server`` it starts its own ``allinone serve`` (``ServerProcess``) and stops
it at the end. It deploys ``fixtures/workflows/functions/passthrough.py`` with
``minScale: 1`` (a warm pod: no cold start in the figures) and three workflows, then
measures, interleaved run by run so that noise hits all alike:

- ``direct``: N sequential ``POST /function/passthrough`` calls (keep-alive);
- ``workflow``: one synchronous ``POST /workflow/tasks-N`` of N pass-through Task states;
- ``pass``: one synchronous run of N ``Pass`` states (no invocation: the interpreter and
  the store writes alone);
- ``empty``: a one-``Pass`` workflow (the fixed cost of an execution: create, record,
  finish).

Per Task overhead = (median workflow - median direct) / N, the client's view (the direct
calls also pay N client round trips, the workflow one). The server's view comes from
the history of each workflow run: the execution's time minus the time between each
TaskScheduled and TaskSucceeded, per Task state (the engine: interpreting, one etcd
write per transition, the events). It prints the medians and
writes them as JSON (``--json``). A shared 2-core machine is noisy: compare the columns
of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from allinone.testing import FIXTURES, ServerProcess


def chain(n: int, kind: str) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for i in range(n):
        st: dict[str, Any] = ({"Type": "Task", "Resource": "passthrough"} if kind == "task"
                              else {"Type": "Pass"})
        if i == n - 1:
            st["End"] = True
        else:
            st["Next"] = f"s{i + 1}"
        states[f"s{i}"] = st
    return {"StartAt": "s0", "States": states}


def _ms(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000


def measure(url: str, n: int, runs: int) -> dict[str, Any]:
    http = requests.Session()
    body = {"k": "v", "n": 1}
    resp = http.post(url + "/api/v1/functions", data={
        "name": "passthrough", "spec": json.dumps({"scaling": {"minScale": 1}})},
        files={"source": ("passthrough.py",
                          (FIXTURES / "workflows/functions/passthrough.py").read_bytes())})
    if resp.status_code not in (201, 409):
        raise SystemExit(f"deploy failed: {resp.text}")
    deadline = time.monotonic() + 300
    while http.get(url + "/api/v1/functions/passthrough").json()["status"].get(
            "phase") != "Ready":
        if time.monotonic() > deadline:
            raise SystemExit("passthrough did not become Ready")
        time.sleep(0.2)
    flows = {f"tasks-{n}": chain(n, "task"), f"pass-{n}": chain(n, "pass"),
             "empty": chain(1, "pass")}
    for name, d in flows.items():
        r = http.post(url + "/api/v1/workflows", json={"name": name, "definition": d})
        if r.status_code == 409:
            r = http.put(url + f"/api/v1/workflows/{name}", json={"definition": d})
        r.raise_for_status()

    def direct() -> None:
        for _ in range(n):
            r = http.post(url + "/function/passthrough", json=body)
            assert r.status_code == 200, r.text

    split: list[dict[str, float]] = []

    def flow(name: str) -> None:
        r = http.post(url + f"/workflow/{name}", json=body)
        assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
        if name.startswith("tasks-"):
            split.append(inside(r.json()["executionId"]))

    def inside(eid: str) -> dict[str, float]:
        """From the history (ms timestamps): the execution's time on the server, and the
        part of it spent in Task invocations (TaskScheduled -> TaskSucceeded)."""
        events = http.get(url + f"/api/v1/workflows/tasks-{n}/executions/{eid}").json()[
            "events"]
        ts = {e["id"]: _ms(e["timestamp"]) for e in events}
        total = ts[events[-1]["id"]] - ts[events[0]["id"]]
        sched = [e for e in events if e["type"] == "TaskScheduled"]
        done = [e for e in events if e["type"] == "TaskSucceeded"]
        invoking = sum(ts[b["id"]] - ts[a["id"]] for a, b in zip(sched, done, strict=True))
        return {"server_ms": total, "invoking_ms": invoking}

    cases = {"direct": direct, "workflow": lambda: flow(f"tasks-{n}"),
             "pass": lambda: flow(f"pass-{n}"), "empty": lambda: flow("empty")}
    errors: list[str] = []

    def timed(f: Any) -> float | None:
        t0 = time.perf_counter()
        try:
            f()
        except AssertionError as exc:  # a failed call: counted and reported, run dropped
            errors.append(str(exc)[:300])
            return None
        return (time.perf_counter() - t0) * 1000

    for f in cases.values():  # warm every path once
        timed(f)
    split.clear()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for k, f in cases.items():
            ms = timed(f)
            if ms is not None:
                times[k].append(ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    server_ms = statistics.median(x["server_ms"] for x in split)
    invoking_ms = statistics.median(x["invoking_ms"] for x in split)
    return {
        "server_side_ms": {"execution": server_ms, "in_task_invocations": invoking_ms,
                           "engine_per_task": round((server_ms - invoking_ms) / n, 2)},
        "tasks": n, "runs": runs,
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "direct_per_call_ms": round(med["direct"] / n, 2),
        "workflow_per_task_ms": round(med["workflow"] / n, 2),
        "overhead_per_task_ms": round((med["workflow"] - med["direct"]) / n, 2),
        "pass_state_ms": round(med["pass"] / n, 2),
        "execution_fixed_ms": round(med["empty"], 2),
        "errors": errors,
        "raw_ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    srv = None
    try:
        if args.server:
            url = args.server.rstrip("/")
        else:
            srv = ServerProcess(Path(tempfile.mkdtemp(prefix="allinone-wf-bench-")))
            srv.start()
            url = srv.url
        out = measure(url, args.tasks, args.runs)
    finally:
        if srv is not None:
            srv.stop()
            srv.cleanup_containers()
    m = out["median_ms"]
    print(f"{args.tasks} tasks, {args.runs} interleaved runs, medians:")
    print(f"  {args.tasks} direct invocations      {m['direct']:8.2f} ms "
          f"({out['direct_per_call_ms']} ms per call)")
    print(f"  workflow of {args.tasks} Task states  {m['workflow']:8.2f} ms "
          f"({out['workflow_per_task_ms']} ms per Task)")
    print(f"  workflow of {args.tasks} Pass states  {m['pass']:8.2f} ms "
          f"({out['pass_state_ms']} ms per state)")
    print(f"  workflow of 1 Pass state    {m['empty']:8.2f} ms (fixed cost of an execution)")
    print(f"  overhead per Task state: {out['overhead_per_task_ms']} ms (client view)")
    sv = out["server_side_ms"]
    print(f"  server side (history timestamps, ms resolution): execution {sv['execution']} ms, "
          f"of which Task invocations {sv['in_task_invocations']} ms; engine "
          f"{sv['engine_per_task']} ms per Task state")
    if out["errors"]:
        print(f"  {len(out['errors'])} failed call(s), their runs dropped: {out['errors'][0]}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
