"""Trigger latency: a file's write to its function's start, and a schedule's jitter.

    python -m loadtests.trigger_latency [--files 20] [--fires 20] [--json FILE]

Starts its own ``allinone serve`` (temporary state, free ports), deploys
``fixtures/echo.py`` (it returns the event and ``startedAt``, its ``time.time()`` when
called: pods share the host's clock) and warms it, then:

1. **File drop**: a watch trigger with a sink; ``--files`` files written one at a time,
   each waiting for its result in the outbox. Delay = the function's ``startedAt`` minus
   the moment the test closed the file. The floor is the debouncer's quiet period
   (0.1 s): a write is delivered only once the file has been quiet that long.
2. **Schedule**: ``@every 1s`` with a sink for ``--fires`` fires. Jitter = ``firedTime``
   minus ``scheduledTime`` (the trigger's loop), and the function's ``startedAt`` minus
   ``scheduledTime`` (to the function's start).

3. **Image pipeline** (``--pipeline N``, off by default: it builds the four Pillow
   functions of ``fixtures/imagepipe``, about a minute): ``imagepipe.json`` behind a
   watch trigger with a sink, each test image dropped N times, one at a time. Delay =
   the execution's ``startDate`` minus the write; end to end = the result JSON in the
   outbox; and per image the execution's own time (``stopDate - startDate``).

Prints medians, p90 and max in milliseconds and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from allinone.objects import parse_rfc3339
from allinone.testing import FIXTURES, ServerProcess, wait_for


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1), "max_ms": round(ms[-1], 1),
            "min_ms": round(ms[0], 1)}


def create(srv: ServerProcess, name: str, spec: dict[str, Any]) -> None:
    resp = srv.http.post(srv.url + "/api/v1/triggers", json={"name": name, "spec": spec})
    if resp.status_code != 201:
        raise SystemExit(f"creating trigger {name} failed: {resp.text}")


def file_drop(srv: ServerProcess, tmp: Path, n: int) -> list[float]:
    inbox, outbox = tmp / "inbox", tmp / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    create(srv, "drop", {"target": {"function": "echo"}, "watch": {"path": str(inbox)},
                         "sink": {"directory": str(outbox)}})
    time.sleep(1.0)
    delays = []
    for i in range(n):
        with open(inbox / f"f{i}.txt", "wb") as f:
            f.write(b"x" * 1000)
        written = time.time()
        result = outbox / f"f{i}.txt.json"
        wait_for(result.exists, 30, result.name)
        delays.append(json.loads(result.read_text())["startedAt"] - written)
    srv.http.delete(srv.url + "/api/v1/triggers/drop")
    return delays


def schedule(srv: ServerProcess, tmp: Path, n: int) -> tuple[list[float], list[float]]:
    outbox = tmp / "ticks"
    outbox.mkdir()
    create(srv, "tick", {"target": {"function": "echo"}, "schedule": "@every 1s",
                         "sink": {"directory": str(outbox)}})
    wait_for(lambda: len(list(outbox.glob("*.json"))) >= n, n + 30, f"{n} fires")
    srv.http.delete(srv.url + "/api/v1/triggers/tick")
    fired, started = [], []
    for p in sorted(outbox.glob("*.json"))[:n]:
        doc = json.loads(p.read_text())
        ev = doc["received"]
        scheduled = parse_rfc3339(ev["scheduledTime"])
        fired.append(parse_rfc3339(ev["firedTime"]) - scheduled)
        started.append(doc["startedAt"] - scheduled)
    return fired, started


def pipeline(srv: ServerProcess, tmp: Path, n: int) -> dict[str, list[float]]:
    """The image pipeline behind a file trigger; raw seconds by figure."""
    from allinone.cli import read_source
    pipe = FIXTURES / "imagepipe"
    for fn in ("inspect", "thumbnail", "histogram", "classify"):
        filename, data = read_source(str(pipe / "functions" / fn))
        resp = srv.http.post(srv.url + "/api/v1/functions", data={"name": f"img-{fn}"},
                             files={"source": (filename, data)})
        if resp.status_code != 201:
            raise SystemExit(f"deploying img-{fn} failed: {resp.text}")
    for fn in ("inspect", "thumbnail", "histogram", "classify"):
        srv.wait_phase(f"img-{fn}", "Ready", timeout=600)
    resp = srv.http.post(srv.url + "/api/v1/workflows", json={
        "name": "imagepipe", "definition": json.loads((pipe / "imagepipe.json").read_text())})
    if resp.status_code != 201:
        raise SystemExit(f"deploying the workflow failed: {resp.text}")
    images = {p.name: p.read_bytes() for p in sorted((pipe / "images").iterdir())}
    inbox, outbox = tmp / "pipe-inbox", tmp / "pipe-outbox"
    inbox.mkdir()
    outbox.mkdir()
    create(srv, "pipe", {"target": {"workflow": "imagepipe"}, "watch": {"path": str(inbox)},
                         "sink": {"directory": str(outbox)}})
    time.sleep(1.0)
    written: dict[str, float] = {}
    out: dict[str, list[float]] = {"start": [], "outbox": []}
    for i in range(n + 1):  # round 0 warms the four functions and is not counted
        for image, data in images.items():
            name = f"r{i}-{image}"
            with open(inbox / name, "wb") as f:
                f.write(data)
            written[name] = time.time()
            wait_for((outbox / f"{name}.json").exists, 120, f"{name}.json", interval=0.01)
            if i:
                out["outbox"].append(time.time() - written[name])
    srv.http.delete(srv.url + "/api/v1/triggers/pipe")
    items = srv.http.get(srv.url + "/api/v1/workflows/imagepipe/executions").json()["items"]
    for ex in items:
        name = ex["input"].get("name", "")
        if name.startswith("r0-") or name not in written or ex["status"] != "SUCCEEDED":
            continue
        started = parse_rfc3339(ex["startDate"])
        out["start"].append(started - written[name])
        image = name.split("-", 1)[1]
        out.setdefault(f"execution {image}", []).append(
            parse_rfc3339(ex["stopDate"]) - started)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.trigger_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--fires", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--pipeline", type=int, default=0, metavar="N",
                   help="also drop each imagepipe test image N times (builds Pillow functions)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="allinone-trigger-bench-") as d:
        tmp = Path(d)
        srv = ServerProcess(tmp / "state")
        srv.start()
        try:
            resp = srv.deploy("echo", FIXTURES / "echo.py", wait=False)
            if resp.status_code != 201:
                raise SystemExit(f"deploy failed: {resp.text}")
            srv.wait_phase("echo", "Ready", timeout=600)  # a shared machine builds slowly
            srv.invoke("echo", {})
            drops = file_drop(srv, tmp, args.files)
            fired, started = schedule(srv, tmp, args.fires)
            pipe = pipeline(srv, tmp, args.pipeline) if args.pipeline else {}
        finally:
            srv.stop()
            srv.cleanup_containers()
    report = {"file_write_to_function_start": summary(drops),
              "schedule_fired_minus_scheduled": summary(fired),
              "schedule_function_start_minus_scheduled": summary(started),
              **{f"pipeline {k}": summary(v) for k, v in pipe.items() if v},
              "raw": {"drops": drops, "fired": fired, "started": started, "pipeline": pipe}}
    for key, s in report.items():
        if key != "raw":
            print(f"{key:42} n={s['n']:<3} p50 {s['p50_ms']:7.1f} ms  p90 {s['p90_ms']:7.1f} ms"
                  f"  max {s['max_ms']:7.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
