"""Benchmark: the dashboard's first paint and the pod sampler's cost, N warm pods.

    python -m loadtests.dashboard_cost [--functions 40] [--seconds 30] [--loads 5]
                                       [--paint-only] [--also URL]

Starts its own server (``ServerProcess``), deploys N functions with ``minScale: 1`` (so
N warm pods), then measures:

- **first paint** of ``/ui`` in Debian's chromium (Playwright): milliseconds from the
  navigation's start (the page's ``performance.now()``) to the animation frame that
  draws the functions table with all N rows. A ``MutationObserver`` installed before
  the page's own script (``add_init_script``) notices the rows; nothing in the
  dashboard is changed for the measurement, so the same script measures any version
  of the server. Also the duration of the page's ``GET /api/v1/functions`` (Resource
  Timing), the request the first paint waits on longest. Median of ``--loads`` loads
  after one warm-up load. ``--also URL`` measures another running server with N
  functions too (another version of the code, say), load by load in turn with this
  one, so both see the same machine.
- **the sampler's cost**, side by side: the server's CPU (percent of one core) over
  ``--seconds`` with the N pods idle, sampler on, then the same state served again
  with ``--usage-period 0`` (its pods adopted, sampler off), then on again (so drift
  shows); and the CPU time of one sampling of the N pods in this process (the
  kubelet's path: the container's cgroup, else psutil), median of 50.

Prints one JSON line. Timings are of this machine and its load (printed with them):
compare side by side, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from allinone.testing import FIXTURES, ServerProcess, launch_chromium, wait_for

# Installed in the page before its own script: records when the functions table first
# holds ``want`` rows, and the frame that paints it.
OBSERVER = """
(() => {
  const want = %d;
  const obs = new MutationObserver(() => {
    if (window.__rows !== undefined) return;
    if (document.querySelectorAll('#functions tbody tr').length < want) return;
    window.__rows = performance.now();
    obs.disconnect();
    requestAnimationFrame(() => { window.__paint = performance.now(); });
  });
  obs.observe(document, {childList: true, subtree: true});
})();
"""

TIMINGS = """() => {
  const api = performance.getEntriesByType('resource')
    .filter(e => new URL(e.name).pathname === '/api/v1/functions')[0];
  return {paint: window.__paint, rows: window.__rows, api: api ? api.duration : null};
}"""


def first_paint(urls: list[str], n: int, loads: int) -> list[dict[str, Any]]:
    """Each server's first paint; loads go to the servers in turn (side by side)."""
    from playwright.sync_api import sync_playwright

    runs: list[list[dict[str, float]]] = [[] for _ in urls]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for _ in range(loads + 1):  # the first load warms the browser's caches
                for url, out in zip(urls, runs, strict=True):
                    page = browser.new_page()
                    page.add_init_script(OBSERVER % n)
                    page.goto(url + "/ui")
                    page.wait_for_function("window.__paint !== undefined", timeout=60_000)
                    out.append(page.evaluate(TIMINGS))
                    page.close()
        finally:
            browser.close()
    return [{"url": url} | {f"{k}_ms": round(statistics.median(r[k] for r in rs[1:]), 1)
                            for k in ("paint", "rows", "api")}
            | {"paint_ms_all": [round(r["paint"], 1) for r in rs[1:]]}
            for url, rs in zip(urls, runs, strict=True)]


def server_cpu(srv: ServerProcess, seconds: float) -> float:
    """The server process's CPU over ``seconds``, percent of one core."""
    assert srv.proc is not None
    proc = psutil.Process(srv.proc.pid)
    c0, t0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = proc.cpu_times(), time.monotonic()
    return round(100 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0), 2)


def all_ready(srv: ServerProcess, names: list[str]) -> None:
    wait_for(lambda: all(srv.get(n)["status"].get("readyReplicas") == 1 for n in names),
             600, "every function's pod ready", 1.0)
    time.sleep(5)  # let the start-up (or adoption) settle


def sampling_cost(srv: ServerProcess) -> float:
    """CPU seconds of one sampling of every pod of ``srv``, in this process (median of 50)."""
    from allinone.runtime.docker import DockerRuntime
    from allinone.usage import PsutilReader, UsageSampler

    runtime = DockerRuntime(srv.instance())

    async def pids() -> dict[str, list[int]]:
        out = {}
        for c in await runtime.list():
            pid = await runtime.pid(c.id) if c.running else None
            if pid:
                out[c.pod] = [pid]
        return out

    try:
        targets = asyncio.run(pids())
    finally:
        runtime.close()
    sampler = UsageSampler(PsutilReader())
    costs = []
    for i in range(50):
        p0 = time.process_time()
        sampler.sample(targets, now=float(i))
        costs.append(time.process_time() - p0)
    return statistics.median(costs)


def main() -> None:
    from allinone.config import USAGE_PERIOD_SECONDS

    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--also", action="append", default=[], metavar="URL",
                    help="measure the first paint of this running server too (N functions "
                         "deployed), its loads interleaved with this one's")
    ap.add_argument("--paint-only", action="store_true",
                    help="measure the first paint only (a server without --usage-period)")
    args = ap.parse_args()
    # The production autoscaler tick (2 s), not the tests' 0.5 s: a user's server.
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="allinone-dash-")), tick=2.0)
    srv.start()
    out: dict[str, Any] = {"functions": args.functions}
    try:
        names = [f"f{i:02d}" for i in range(args.functions)]
        spec = {"scaling": {"minScale": 1}, "resources": {"memoryMiB": 64}}
        for name in names:
            resp = srv.deploy(name, FIXTURES / "add.py", spec=spec, wait=False)
            assert resp.status_code == 201, resp.text
        for name in names:
            srv.wait_phase(name, "Ready", timeout=900)
        all_ready(srv, names)
        out["load_before_paint"] = os.getloadavg()[0]
        painted = first_paint([srv.url, *args.also], args.functions, args.loads)
        out["first_paint"] = painted[0]
        if args.also:
            out["first_paint_also"] = painted[1:]
        if not args.paint_only:
            per_sample = sampling_cost(srv)
            out["sampler_cpu_ms_per_sampling"] = round(per_sample * 1000, 2)
            out["sampler_core_percent"] = round(100 * per_sample / USAGE_PERIOD_SECONDS, 3)
            cpu: dict[str, list[float]] = {"on": [], "off": []}
            for phase in ("on", "off", "on"):
                srv.stop()
                srv.extra_args = () if phase == "on" else ("--usage-period", "0")
                srv.start()
                all_ready(srv, names)
                cpu[phase].append(server_cpu(srv, args.seconds))
            out["server_cpu_percent"] = {"sampler_on": cpu["on"], "sampler_off": cpu["off"],
                                         "seconds": args.seconds}
        out["load_after"] = os.getloadavg()[0]
        print(json.dumps(out))
    finally:
        srv.stop()
        srv.cleanup_containers()


if __name__ == "__main__":
    main()
