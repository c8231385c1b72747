"""Benchmark: the dashboard's first paint and the pod sampler's cost, N warm pods.

    python -m loadtests.dashboard_cost [--functions 40] [--seconds 30]

Starts its own server (``ServerProcess``), deploys N functions with ``minScale: 1`` (so
N warm pods), then measures:

- first paint of ``/ui`` in Debian's chromium (Playwright): navigation start to the
  functions table holding N rows, median of 5 loads;
- the server's CPU (percent of one core) over ``--seconds`` with the N pods idle: the
  sampler, the dashboard's history and every other loop included;
- the pod sampler's own cost: CPU time of one sampling of the N pods (the kubelet's
  ``PodUsage`` path: the container's cgroup, else psutil), median over 50, and the
  share of a core that is at one sampling per 2 s.

Prints one JSON line. Timings are of this machine; compare side by side, not across.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker
import psutil

from allinone.testing import FIXTURES, ServerProcess, wait_for
from allinone.usage import DEFAULT_PERIOD_SECONDS, PsutilReader, UsageSampler

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def first_paint(url: str, n: int, loads: int = 5) -> float:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            for _ in range(loads):
                page = browser.new_page()
                t0 = time.perf_counter()
                page.goto(url + "/ui")
                page.wait_for_function(
                    f"document.querySelectorAll('#functions tbody tr').length >= {n}")
                times.append(time.perf_counter() - t0)
                page.close()
        finally:
            browser.close()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="allinone-dash-")))
    srv.start()
    try:
        names = [f"f{i:02d}" for i in range(args.functions)]
        spec = {"scaling": {"minScale": 1}, "resources": {"memoryMiB": 64}}
        for name in names:
            resp = srv.deploy(name, FIXTURES / "add.py", spec=spec, wait=False)
            assert resp.status_code == 201, resp.text
        for name in names:
            srv.wait_phase(name, "Ready", timeout=600)
        wait_for(lambda: all(srv.get(n)["status"].get("readyReplicas") == 1 for n in names),
                 600, "every function's pod ready", 1.0)
        time.sleep(5)  # let the start-up settle
        paint = first_paint(srv.url, args.functions)
        assert srv.proc is not None
        server = psutil.Process(srv.proc.pid)
        c0, t0 = server.cpu_times(), time.monotonic()
        time.sleep(args.seconds)
        c1, t1 = server.cpu_times(), time.monotonic()
        server_cpu = 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)
        client = docker.from_env()
        pids = {c.name: [c.attrs["State"]["Pid"]] for c in srv.containers()}
        client.close()
        sampler = UsageSampler(PsutilReader())
        costs = []
        for i in range(50):
            p0 = time.process_time()
            sampler.sample(pids, now=float(i))
            costs.append(time.process_time() - p0)
        per_sample = statistics.median(costs)
        print(json.dumps({
            "functions": args.functions, "pods": len(pids),
            "first_paint_s": round(paint, 3),
            "server_cpu_percent_idle": round(server_cpu, 2),
            "sampler_cpu_ms_per_period": round(per_sample * 1000, 2),
            "sampler_core_percent": round(100 * per_sample / DEFAULT_PERIOD_SECONDS, 3),
        }))
    finally:
        srv.stop()
        srv.cleanup_containers()


if __name__ == "__main__":
    main()
