"""The benchmarks, side by side in one run: ``python -m loadtests.bench [--only PART ...]``.

Without ``--server`` it runs its own ``allinone serve`` (``ServerProcess``, tick 0.5 s,
``--standby created``: its cold starts are container starts, compared with Docker's;
run the storm against a server with defaults, whose frozen standbys resume); ``paused``
gets a second one with ``--keep-paused``. The parts (``PARTS``) and how to read each:
docs/BENCHMARKS.md. Every bare-container floor beside a figure is made by the
platform's own runtime calls (:class:`Sandbox`). One table (``ROWS``) with the targets;
everything, raw trials included, as JSON, also when a part fails. On a shared 2-core
machine compare columns of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import docker
import psutil

from allinone.apiserver.workflows import MAX_PAGE
from allinone.client import ApiError, Client, Timeout, poll
from allinone.kubelet.poddir import PodDirs
from allinone.objects import parse_rfc3339
from allinone.runtime.base import ContainerSpec
from allinone.runtime.docker import DockerRuntime, container_env, host_config_kwargs
from allinone.testing import FIXTURES, ServerProcess, launch_chromium
from loadtests.loadgen import measure, sequence, storm
from loadtests.report import summarize
from loadtests.scenarios import PIPE, STAGES, counted_cold, deploy_imagepipe

ADD_BODY = b'{"x": 1, "y": 2}'
PARTS = ("warm", "throughput", "cold", "paused", "deploy", "idle", "dashboard", "workflow",
         "trigger", "storm")
THROUGHPUT_ROUNDS = 3  # runs per path, alternating; the median is reported
TARGETS = {
    "cold_start_p50_vs_docker_api": 1.0,  # cold start p50 <= bare create+start p50
    "paused_start_p50_ms": 20.0,
    "added_latency_p50_ms": 0.5,
    "throughput_ratio": 0.5,  # activator / direct-to-pod
    "deploy_to_ready_s": 1.0,
    "idle_cpu_percent": 1.0,
    "first_paint_s": 1.0,
    "storm_p50_ms": 2000.0,  # 40 functions at zero invoked at once (issue 10)
    "storm_max_ms": 3000.0,
}
AT_ZERO = {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6}
ONE_POD = {"minScale": 1, "maxScale": 1}
# The bench's own server: a cold start there starts a (created) container, the figure
# compared with Docker's own create + start; frozen standbys (the default) resume.
OWN_SERVER_ARGS = ("--standby", "created")
STANDBY_STATUSES = ("paused", "created")  # Docker's status of a frozen / created standby


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict[str, float | int | None]:
    return summarize(values, (50, 90, 99), 4)


def calls(target: int | str, path: str, n: int, steady: bool = False) -> list[float]:
    """``n`` sequential calls of ``add.py`` on one new connection to the activator's port
    or a pod's socket, each one's ms. With ``steady`` one more call first, not counted:
    every counted call rides a connection already in use, as a client's keep-alive one."""
    url, unix = ((f"http://127.0.0.1:{target}{path}", None) if isinstance(target, int)
                 else (f"http://pod{path}", target))
    return sequence(url, n + steady, ADD_BODY, unix)[steady:]


def alternate(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Each case once a round, in reverse order every other round: drift on a shared
    machine hits every case alike. Each case's results, in order."""
    out: dict[str, list[Any]] = {k: [] for k in cases}
    for i in range(rounds):
        for k in list(cases)[::-1 if i % 2 else 1]:
            out[k].append(cases[k]())
    return out


def healthz_until_200(sock: str, timeout: float = 30.0, every: float = 0.001) -> float:
    """Poll GET /healthz on a pod's socket every ``every`` s; perf_counter time of the
    first 200."""
    req = b"GET /healthz HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n"
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(sock)
            s.sendall(req)
            if s.recv(64)[9:12] == b"200":
                return time.perf_counter()
        time.sleep(every)
    raise RuntimeError(f"nothing answered /healthz on {sock} within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process so far, not of its children."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# -- bare pods: the platform's own runtime calls, without the platform ------------------

class Sandbox:
    """Bare pods of one function image made by :class:`DockerRuntime`'s own calls (create,
    start, pause, remove: those a pod gets, under an instance of its own), so "bare"
    differs only by the platform's work, not by a cheaper container."""

    def __init__(self, client: Any, image: str, handler: str) -> None:
        self.client, self.image, self.handler = client, image, handler
        self.runtime = DockerRuntime(f"b{uuid.uuid4().hex[:7]}", client)
        self.tmp = tempfile.mkdtemp(prefix="ab-")
        self.dirs = PodDirs(Path(self.tmp) / "pods")
        self.made: dict[str, str] = {}  # container id -> pod name

    def spec(self) -> ContainerSpec:
        pod = f"bench-{uuid.uuid4().hex[:8]}"
        return ContainerSpec(pod=pod, function="bench", image=self.image,
                             socket_dir=self.dirs.create(pod), user=self.dirs.user,
                             env={"ALLINONE_HANDLER": self.handler})

    def start(self, t0: float = 0.0, every: float = 0.001) -> tuple[str, float]:
        """A bare pod created and started: ``(container id, ms from t0 to its first 200)``
        (``t0`` default: now)."""
        spec = self.spec()
        t0 = t0 or time.perf_counter()
        cid = self.runtime._create(spec)
        self.made[cid] = spec.pod
        self.runtime._run(cid, spec.pod)
        return cid, (healthz_until_200(self.dirs.connect_path(spec.pod), every=every) - t0) * 1000

    def cli_start(self) -> float:
        """``docker run -d``, sandboxed as a pod (the runtime's settings as the CLI's
        flags), to the first 200 (ms)."""
        spec = self.spec()
        hc = host_config_kwargs(spec)
        env = [x for k, v in container_env(spec).items() for x in ("-e", f"{k}={v}")]
        cmd = ["docker", "run", "-d", "--network", hc["network_mode"], "--name", spec.pod,
               "--user", spec.user, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--read-only", "--tmpfs", f"/tmp:{hc['tmpfs']['/tmp']}",
               *(x for d, b in hc["binds"].items() for x in ("-v", f"{d}:{b['bind']}")),
               *(x for k, v in hc["log_config"].config.items() for x in ("--log-opt", f"{k}={v}")),
               *env, "--memory", hc["mem_limit"], "--cpus", f"{spec.cpus:g}",
               "--pids-limit", str(hc["pids_limit"]), self.image]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return (healthz_until_200(self.dirs.connect_path(spec.pod)) - t) * 1000
        finally:
            proc.wait(30)
            subprocess.run(["docker", "rm", "-f", spec.pod], capture_output=True, check=False)
            self.dirs.remove(spec.pod)

    def unpauses(self, trials: int) -> list[float]:
        """``docker unpause`` of a paused bare pod to the first 200 on /healthz (ms)."""
        cid, _ = self.start()
        out = []
        try:
            for _ in range(trials):
                self.runtime._pause(cid)
                time.sleep(0.2)
                t = time.perf_counter()
                self.client.api.unpause(cid)
                out.append((healthz_until_200(self.dirs.connect_path(self.made[cid])) - t) * 1000)
        finally:
            self.clear()
        return out

    def starts(self, n: int, every: float = 0.001) -> list[float]:
        """``n`` bare pods started at once (a thread each), each timed from the common
        start to its first 200 (ms), sorted. A storm polls every 5 ms: 40 threads polling
        every 1 ms would measure the bench's own contention."""
        try:
            with ThreadPoolExecutor(n) as pool:
                t0 = time.perf_counter()
                return sorted(ms for _, ms in pool.map(lambda _: self.start(t0, every), range(n)))
        finally:
            self.clear()

    def clear(self) -> None:
        """Every bare pod removed (best effort: a failure must not hide the part's own)."""
        for cid in list(self.made):
            with contextlib.suppress(Exception):
                self.runtime._remove(cid)
            self.dirs.remove(self.made.pop(cid))

    def close(self) -> None:
        self.clear()
        self.runtime.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def functions(api: Client, names: list[str], spec: dict[str, Any], ready: int | None = None,
              settle: float = 0.0) -> Iterator[Sandbox]:
    """``add.py`` deployed as each of ``names`` (waited on until Ready, and with
    ``ready`` replicas when given, then ``settle`` s), and a :class:`Sandbox` of its image
    for the bare runs beside it; all deleted afterwards."""
    box = None
    try:
        for name in names:
            api.deploy(name, FIXTURES / "add.py", spec, wait=False)
        for name in names:
            fn = api.wait_ready(name, timeout=600)
            if ready is not None:
                api.wait_replicas(name, ready, ready, timeout=600)
        time.sleep(settle)  # the last starts' follow-up (probes, status writes) settles
        box = Sandbox(docker.from_env(max_pool_size=max(10, len(names))),
                      fn["status"]["image"], fn["spec"]["handler"])
        yield box
    finally:
        if box is not None:
            box.close()
        for name in names:  # best effort: a failure here must not hide the part's own
            try:
                api.delete(name, missing_ok=True)
            except ApiError as exc:
                log(f"could not delete {name}: {exc}")


# -- warm latency and throughput (one pod, direct vs through the activator) -----------

def bench_warm_latency(port: int, function: str, sock: str, n: int,
                       block: int = 100) -> dict[str, Any]:
    paths: dict[str, tuple[int | str, str]] = {"direct": (sock, "/"),
                                               "activator": (port, f"/function/{function}")}
    for target, path in paths.values():  # warm both paths: caches, the pod's first calls
        calls(target, path, 200)
    blocks = alternate({k: partial(calls, t, p, block, True) for k, (t, p) in paths.items()},
                       max(1, n // block))
    d, a = (stats([x for b in blocks[k] for x in b]) for k in ("direct", "activator"))
    return {"requests_each": d["count"], "direct_ms": d, "activator_ms": a,
            **{f"added_{q}_ms": round(float(a[q] or 0) - float(d[q] or 0), 4)
               for q in ("p50", "p99")}}


def bench_throughput(port: int, function: str, sock: str, conns: int,
                     seconds: float) -> dict[str, Any]:
    """Activator and direct alternating, THROUGHPUT_ROUNDS runs each, the median reported."""
    log(f"throughput: {THROUGHPUT_ROUNDS} runs a path, {conns} connections, {seconds:g} s")
    res: dict[str, Any] = {}
    for key, rs in alternate({
            "activator": lambda: measure(f"http://127.0.0.1:{port}/function/{function}",
                                         conns, seconds, ADD_BODY),
            "direct": lambda: measure("http://pod/", conns, seconds, ADD_BODY, unix=sock)},
            THROUGHPUT_ROUNDS).items():
        res[key] = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        res[key + "_runs_rps"] = [r["rps"] for r in rs]
    res["ratio"] = round(res["activator"]["rps"] / res["direct"]["rps"], 3)
    return {"concurrency": conns, "seconds": seconds, "rounds": THROUGHPUT_ROUNDS,
            "python": res}


# -- cold start and start from paused, each beside its bare floor ----------------------

def bench_cold_start(api: Client, port: int, trials: int, tick: float) -> dict[str, Any]:
    name, rows = "bench-cold", list[dict[str, Any]]()
    with functions(api, [name], {"scaling": {"maxScale": 1, **AT_ZERO}}) as box:
        for i in range(trials):
            api.wait_replicas(name, 0, 0, 60 + 10 * tick, interval=0.02, no_pods=True)
            # As a function idle for more than a moment: its standby container is
            # created (~0.1-0.3 s after its last pod went; see the kubelet).
            time.sleep(1.0)
            (cold, warm), counted, server_ms = counted_cold(
                api, name, lambda: calls(port, f"/function/{name}", 2))
            cli, sdk = box.cli_start(), box.starts(1)[0]
            rows.append({"trial": i + 1, "activator_cold_ms": round(cold, 3),
                         "warm_call_ms": round(warm, 3), "counted_cold": counted,
                         "activator_server_ms": server_ms,
                         "docker_run_cli_ms": round(cli, 3), "docker_api_ms": round(sdk, 3)})
            log(f"cold start {i + 1}/{trials}: activator {cold:.0f} ms, docker run {cli:.0f} "
                f"ms, docker API {sdk:.0f} ms")
    out: dict[str, Any] = {"trials": rows, "image": box.image, **{
        k: stats([r[k] for r in rows if r[k] is not None]) for k in (  # server: counted only
            "activator_cold_ms", "warm_call_ms", "activator_server_ms", "docker_run_cli_ms",
            "docker_api_ms")}}
    out["p50_vs_docker_api"] = round(out["activator_cold_ms"]["p50"]
                                     / out["docker_api_ms"]["p50"], 3)
    return out


def bench_paused(api: Client, port: int, trials: int, tick: float) -> dict[str, Any]:
    """Scale-from-zero when the server keeps scaled-down pods paused (--keep-paused)."""
    name, rows = "bench-paused", []
    with functions(api, [name], {"scaling": {"maxScale": 1, **AT_ZERO}}) as box:
        calls(port, f"/function/{name}", 1)  # the first pod, to be paused
        for i in range(trials):
            api.wait_replicas(name, 0, 0, 60 + 10 * tick, no_pods=True)
            poll(lambda: box.client.containers.list(all=True, filters={
                "label": [f"allinone.function={name}"], "status": "paused"}), 30,
                f"{name}'s container paused")
            rows.append({"trial": i + 1, "activator_resume_ms": round(
                calls(port, f"/function/{name}", 1)[0], 3)})
            log(f"paused start {i + 1}/{trials}: {rows[-1]['activator_resume_ms']:.1f} ms")
        floor = box.unpauses(trials)
    return {"trials": rows, "image": box.image, "docker_unpause_ms": stats(floor),
            "activator_resume_ms": stats([float(r["activator_resume_ms"]) for r in rows])}


# -- deploy to Ready ---------------------------------------------------------------------

def one_kb_function(tag: str) -> bytes:
    """A function of exactly 1,024 bytes (a comment pads it), new bytes per ``tag``."""
    body = f'"""Benchmark function {tag}: adds two numbers."""\n\n\ndef run(x=1, y=2):\n' \
           "    return x + y\n\n# padding to one kilobyte "
    return (body + "#" * (1023 - len(body)) + "\n").encode()


def bench_deploy(api: Client, n: int) -> dict[str, Any]:
    """New bytes each time (a real build and push) and the same bytes under a new name
    (the build cache by source hash), each to ``phase: Ready`` polled every 10 ms."""
    times: dict[str, list[float]] = {"first": [], "cached": [], "build": []}
    names: list[str] = []
    try:
        for i in range(n):
            src = one_kb_function(uuid.uuid4().hex)
            for kind in ("first", "cached"):
                names.append(name := f"bench-deploy-{kind}-{i}-{uuid.uuid4().hex[:4]}")
                t = time.perf_counter()
                api.create(name, ("func.py", src), {})
                fn = api.wait_ready(name, interval=0.01)
                times[kind].append(time.perf_counter() - t)
                if kind == "first":
                    times["build"].append(float(fn["status"].get("buildSeconds") or 0))
            log(f"deploy {i + 1}/{n}: first build {times['first'][-1]:.3f} s, cached "
                f"{times['cached'][-1]:.3f} s")
    finally:
        for name in names:
            api.delete(name, missing_ok=True)
    return {"source_bytes": 1024, "first_build_s": stats(times["first"]),
            "cached_rebuild_s": stats(times["cached"]),
            "server_build_seconds": stats(times["build"]), "poll_interval_s": 0.01}


# -- idle CPU with warm functions, the dashboard and the pod sampler --------------------

def bench_idle(pid: int, n: int, seconds: float) -> dict[str, Any]:
    """The server's own CPU over ``seconds`` (``n`` warm functions, no traffic)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
    return {"functions": n, "seconds": round(wall, 1), "server_cpu_s": round(cpu, 3),
            "server_cpu_percent": round(100 * cpu / wall, 2)}


# Installed in the page before its own script: records performance.now() of the frame
# that first paints ``want`` rows of the functions table. The dashboard is not changed
# for it, so any version can be measured.
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
  return {paint: window.__paint, api: api ? api.duration : null};
}"""


def bench_dashboard(url: str, names: list[str], client: Any, loads: int = 5) -> dict[str, Any]:
    """``/ui``'s first paint with the functions (ms from navigation start) and its ``GET
    /api/v1/functions``: a warm-up load, then ``loads``, the median; one sampling of the
    functions' pods (cgroup, else psutil), median of 50."""
    from playwright.sync_api import sync_playwright

    from allinone.usage import DEFAULT_PERIOD_SECONDS, PsutilReader, UsageSampler
    runs: list[dict[str, float]] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for _ in range(loads + 1):
                page = browser.new_page()
                page.add_init_script(OBSERVER % len(names))
                page.goto(url + "/ui")
                page.wait_for_function("window.__paint !== undefined", timeout=60_000)
                runs.append(page.evaluate(TIMINGS))
                page.close()
        finally:
            browser.close()
    pids = {c.name: [c.attrs["State"]["Pid"]] for c in client.containers.list(
        filters={"label": "allinone.managed=1"}) if c.labels.get("allinone.function") in names}
    sampler, costs = UsageSampler(PsutilReader()), []
    for i in range(50):
        p0 = time.process_time()
        sampler.sample(pids, now=float(i))
        costs.append(time.process_time() - p0)
    per = statistics.median(costs)
    return {"functions": len(names), "pods": len(pids), "loads": loads,
            "first_paint_ms_all": [round(r["paint"], 1) for r in runs[1:]],
            "first_paint_s": round(statistics.median(r["paint"] for r in runs[1:]) / 1000, 3),
            "first_paint_api_ms": round(statistics.median(r["api"] for r in runs[1:]), 1),
            "sampler_cpu_ms_per_period": round(per * 1000, 2),
            "sampler_core_percent": round(100 * per / DEFAULT_PERIOD_SECONDS, 3)}


def bench_sampler(server: ServerProcess, api: Client, names: list[str],
                  seconds: float) -> dict[str, Any]:
    """The server's CPU over ``seconds`` with the pod sampler on, off (``serve
    --usage-period 0``) and on again, the same state served each time (its pods adopted)."""
    cpu = []
    for phase in ("on", "off", "on"):
        server.stop()
        server.extra_args = OWN_SERVER_ARGS + (() if phase == "on" else ("--usage-period", "0"))
        server.start()
        for name in names:
            api.wait_replicas(name, 1, 1, timeout=600)
        time.sleep(5.0)  # the adoption's probes and status writes settle
        assert server.proc is not None
        cpu.append(bench_idle(server.proc.pid, len(names), seconds)["server_cpu_percent"])
    return {"functions": len(names), "seconds": seconds, "on_off_on_cpu_percent": cpu,
            "sampler_on_cpu_percent": cpu[::2], "sampler_off_cpu_percent": cpu[1:2]}


# -- what a workflow adds per Task state -------------------------------------------------

def chain(n: int, kind: str) -> dict[str, Any]:
    """A workflow of ``n`` pass-through Task states (``kind`` task) or Pass states."""
    state: dict[str, Any] = ({"Type": "Task", "Resource": "passthrough"} if kind == "task"
                             else {"Type": "Pass"})
    return {"StartAt": "s0", "States": {f"s{i}": {**state, **(
        {"End": True} if i == n - 1 else {"Next": f"s{i + 1}"})} for i in range(n)}}


def bench_workflow(api: Client, n: int, runs: int) -> dict[str, Any]:
    """N direct calls vs a workflow of N Task states, N Pass states, one Pass state,
    alternating run by run (run 0 warms every path and is not counted); the server's split
    from each execution's history. A failed run is counted in ``errors`` and dropped."""
    body, flows = {"k": "v", "n": 1}, {f"tasks-{n}": chain(n, "task"),
                                       f"pass-{n}": chain(n, "pass"), "empty": chain(1, "pass")}
    api.deploy("passthrough", FIXTURES / "workflows/functions/passthrough.py",
               {"scaling": {"minScale": 1}})
    for name, d in flows.items():
        api.deploy_workflow(name, d)
    split: list[dict[str, float]] = []
    errors: list[str] = []

    def timed(f: Callable[[], Any]) -> Callable[[], float | None]:
        def run() -> float | None:
            t0 = time.perf_counter()
            try:
                f()
            except Exception as exc:
                errors.append(str(exc)[:300])
                return None
            return (time.perf_counter() - t0) * 1000
        return run

    def flow(name: str) -> None:
        r = api.start_workflow(name, body)
        if r.status_code != 200 or r.json()["status"] != "SUCCEEDED":
            raise RuntimeError(r.text[:300])
        if name.startswith("tasks-"):  # the server's split, from the history
            events = api.execution(name, r.json()["executionId"])["events"]
            ts = {e["id"]: parse_rfc3339(e["timestamp"]) * 1000 for e in events}
            sched = [e for e in events if e["type"] == "TaskScheduled"]
            done = [e for e in events if e["type"] == "TaskSucceeded"]
            split.append({"server_ms": ts[events[-1]["id"]] - ts[events[0]["id"]],
                          "invoking_ms": sum(ts[b["id"]] - ts[a["id"]]
                                             for a, b in zip(sched, done, strict=True))})
    cases = {"direct": timed(lambda: [api.call("passthrough", body) for _ in range(n)]),
             **{k: timed(partial(flow, f)) for k, f in (
                 ("workflow", f"tasks-{n}"), ("pass", f"pass-{n}"), ("empty", "empty"))}}
    try:
        alternate(cases, 1)
        split.clear()
        got = alternate(cases, runs)
    finally:
        for name in flows:
            api.delete_workflow(name, missing_ok=True)
        api.delete("passthrough", missing_ok=True)
    times = {k: [x for x in v if x is not None] for k, v in got.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    server = statistics.median(x["server_ms"] for x in split)
    invoking = statistics.median(x["invoking_ms"] for x in split)
    return {"tasks": n, "runs": runs, "median_ms": {k: round(v, 2) for k, v in med.items()},
            "server_side_ms": {"execution": server, "in_task_invocations": invoking,
                               "engine_per_task": round((server - invoking) / n, 2)},
            "direct_per_call_ms": round(med["direct"] / n, 2),
            "workflow_per_task_ms": round(med["workflow"] / n, 2),
            "overhead_per_task_ms": round((med["workflow"] - med["direct"]) / n, 2),
            "pass_state_ms": round(med["pass"] / n, 2),
            "execution_fixed_ms": round(med["empty"], 2), "errors": errors,
            "raw_ms": {k: [round(x, 2) for x in v] for k, v in times.items()}}


# -- trigger latency -------------------------------------------------------------------

def drop_and_wait(inbox: Path, outbox: Path, name: str, data: bytes) -> float:
    """Write ``name`` into the watched ``inbox``; when it was closed (time.time())."""
    (inbox / name).write_bytes(data)
    written = time.time()
    poll((outbox / f"{name}.json").exists, 120, f"{name}.json in {outbox}", 0.01)
    return written


def bench_trigger(api: Client, tmp: Path, files: int, fires: int,
                  pipeline: int) -> dict[str, Any]:
    """``fixtures/echo.py`` returns its event and ``startedAt`` (its time.time(): pods
    share the host's clock) behind a watch trigger and an ``@every 1s`` schedule."""
    for d in ("inbox", "outbox", "ticks", "pipe-inbox", "pipe-outbox"):
        (tmp / d).mkdir(parents=True)
    api.deploy("echo", FIXTURES / "echo.py", timeout=600)
    api.call("echo", {})
    raw: dict[str, list[float]] = {"drops": [], "fired": [], "started": []}
    try:
        api.create_trigger("drop", {"target": {"function": "echo"}, "watch": {
            "path": str(tmp / "inbox")}, "sink": {"directory": str(tmp / "outbox")}})
        time.sleep(1.0)
        for i in range(files):
            written = drop_and_wait(tmp / "inbox", tmp / "outbox", f"f{i}.txt", b"x" * 1000)
            doc = json.loads((tmp / "outbox" / f"f{i}.txt.json").read_text())
            raw["drops"].append(doc["startedAt"] - written)
        api.delete_trigger("drop")
        api.create_trigger("tick", {"target": {"function": "echo"}, "schedule": "@every 1s",
                                    "sink": {"directory": str(tmp / "ticks")}})
        poll(lambda: len(list((tmp / "ticks").glob("*.json"))) >= fires, fires + 30,
             f"{fires} fires")
        api.delete_trigger("tick")
        for p in sorted((tmp / "ticks").glob("*.json"))[:fires]:
            doc = json.loads(p.read_text())
            scheduled = parse_rfc3339(doc["received"]["scheduledTime"])
            raw["fired"].append(parse_rfc3339(doc["received"]["firedTime"]) - scheduled)
            raw["started"].append(doc["startedAt"] - scheduled)
        if pipeline:
            raw.update(bench_pipeline(api, tmp, pipeline))
    finally:
        for t in ("drop", "tick", "pipe"):
            api.delete_trigger(t, missing_ok=True)
        api.delete_workflow("imagepipe", missing_ok=True)
        for fn in ("echo", *(f"img-{stage}" for stage in STAGES)):
            api.delete(fn, missing_ok=True)
    names = {"drops": "file_write_to_function_start", "fired":
             "schedule_fired_minus_scheduled", "started":
             "schedule_function_start_minus_scheduled"}
    return {**{names.get(k, f"pipeline {k}"): summarize([x * 1000 for x in v], (50, 90), 1)
               for k, v in raw.items() if v}, "raw_s": raw}


def bench_pipeline(api: Client, tmp: Path, n: int) -> dict[str, list[float]]:
    """``imagepipe.json`` behind a watch trigger with a sink, each test image dropped
    ``n`` times one at a time (round 0 warms and is not counted): the execution's start
    after the write, the result in the outbox after the write, each image's execution."""
    deploy_imagepipe(api, "img", "imagepipe")
    api.create_trigger("pipe", {"target": {"workflow": "imagepipe"}, "watch": {
        "path": str(tmp / "pipe-inbox")}, "sink": {"directory": str(tmp / "pipe-outbox")}})
    time.sleep(1.0)
    written: dict[str, float] = {}
    out: dict[str, list[float]] = {"start": [], "outbox": []}
    for i in range(n + 1):
        for image in sorted((PIPE / "images").iterdir()):
            name = f"r{i}-{image.name}"
            written[name] = drop_and_wait(tmp / "pipe-inbox", tmp / "pipe-outbox", name,
                                          image.read_bytes())
            if i:
                out["outbox"].append(time.time() - written[name])
    for ex in api.executions("imagepipe", limit=MAX_PAGE):
        name = ex["input"].get("name", "")
        if name.startswith("r0-") or name not in written or ex["status"] != "SUCCEEDED":
            continue
        started = parse_rfc3339(ex["startDate"])
        out["start"].append(started - written[name])
        out.setdefault(f"execution {name.split('-', 1)[1]}", []).append(
            parse_rfc3339(ex["stopDate"]) - started)
    return out


# -- storm: many functions at zero invoked at the same moment ----------------------------

def bench_storm(api: Client, pid: int | None, n: int, rounds: int,
                tick: float) -> dict[str, Any]:
    """``n`` distinct functions, all at zero, each invoked once at the same moment (a
    connection each), ``rounds`` times, with the server's CPU from the storm's start to
    3 s after its last answer (``pid`` given); then ``n`` bare pods started at once.
    Latency counts from the storm's start."""
    names = [f"bench-storm-{i}" for i in range(n)]
    urls, rows = [f"{api.server}/function/{name}" for name in names], []
    with functions(api, names, {"scaling": AT_ZERO, "resources": {"memoryMiB": 64}}) as box:
        def standbys() -> int:  # functions whose one container is a standby
            found: dict[str, list[str]] = {}
            for c in box.client.containers.list(all=True, ignore_removed=True, filters={
                    "label": "allinone.managed=1"}):
                found.setdefault(c.labels.get("allinone.function", ""), []).append(c.status)
            return sum(found.get(x, []) in ([s] for s in STANDBY_STATUSES) for x in names)
        for i in range(rounds):
            for name in names:
                api.wait_replicas(name, 0, 0, 60 + 10 * tick, interval=0.05, no_pods=True)
            # As functions idle for more than a moment: each has its standby container
            # (40 frozen ones are 40 container starts: ~10 s here). A server with
            # --standby off never gets there: the storm goes on after 120 s.
            with contextlib.suppress(Timeout):
                poll(lambda: standbys() == n, 120, "every standby", 0.5)
            log(f"storm {i + 1}/{rounds}: {standbys()}/{n} standby containers waiting")
            c0, t0 = cpu_seconds(pid) if pid else 0.0, time.perf_counter()
            got = storm(urls, ADD_BODY)  # a slow storm is measured, not cut off (120 s)
            time.sleep(3.0)
            row: dict[str, Any] = {
                "round": i + 1, "ok": n - len(got.failures), "requests": n,
                "storm_s": round(got.seconds, 3), "failed": sorted(o.status for o in got.failures),
                "latency_ms": stats([(o.started + o.seconds - t0) * 1000 for o in got.outcomes])}
            rows.append(row)
            if pid:
                row["server_cpu_s"] = cpu = round(cpu_seconds(pid) - c0, 3)
                row["server_cpu_percent"] = round(100 * cpu / (got.seconds + 3.0), 1)
            log(f"storm {i + 1}/{rounds}: {row['ok']}/{n} ok, p50 {row['latency_ms']['p50']:.0f}"
                f" ms, max {row['latency_ms']['max']:.0f} ms, server CPU "
                f"{row.get('server_cpu_s', '-')} s")
        floor = box.starts(n, every=0.005)
    p50s, maxs = ([float(r["latency_ms"][q]) for r in rows] for q in ("p50", "max"))
    return {"functions": n, "rounds": rows, "p50_ms_median": sorted(p50s)[len(p50s) // 2],
            "max_ms_worst": max(maxs), "all_ok": all(r["ok"] == n for r in rows),
            "p50_ms_rounds": p50s, "max_ms_rounds": maxs, "ok_rounds": [r["ok"] for r in rows],
            "bare_docker_ms": stats(floor), **({"server_cpu_percent_rounds": [
                r["server_cpu_percent"] for r in rows]} if pid else {})}


# -- the table, the run ----------------------------------------------------------------

def dist(s: dict[str, Any], unit: str = "ms") -> str:
    """p50 / p90 / max of a summary, 2 decimals below 10 (3 in s), else whole."""
    def f(x: float) -> str:
        return f"{x:.3f}" if unit == "s" else f"{x:.2f}" if x < 10 else f"{x:.0f}"
    return f"p50 {f(s['p50'])} / p90 {f(s['p90'])} / max {f(s['max'])} {unit} (n={s['count']})"


class Figures(string.Formatter):
    """``{key:dist}`` (``dist s``): a summary by :func:`dist`; a list: each item in the
    format, joined by " / "."""

    def format_field(self, value: Any, spec: str) -> str:
        if spec.startswith("dist"):
            return dist(value, spec[5:] or "ms")
        if isinstance(value, list):
            return " / ".join(format(v, spec) for v in value)
        return format(value, spec)


# (part, figure, measured, target): the first two formatted with the part's JSON, the
# target with TARGETS. A row whose figure the run did not measure is left out.
ROWS = (
    ("warm_latency", "warm latency p50, direct / activator", "{direct_ms[p50]:.3f} / "
     "{activator_ms[p50]:.3f} ms, +{added_p50_ms:.3f} ms", "<= +{added_latency_p50_ms} ms added"),
    ("warm_latency", "warm latency p99, direct / activator", "{direct_ms[p99]:.3f} / "
     "{activator_ms[p99]:.3f} ms, +{added_p99_ms:.3f} ms", ""),
    ("throughput", "throughput ({concurrency} conns, median of {rounds}), direct / activator",
     "{python[direct][rps]:.0f} / {python[activator][rps]:.0f} req/s, ratio "
     "{python[ratio]:.2f}", "ratio >= {throughput_ratio:g}"),
    ("cold_start", "cold start via activator", "{activator_cold_ms:dist}",
     "p50 <= docker API p50"),
    ("cold_start", "docker run (CLI) to first 200", "{docker_run_cli_ms:dist}", ""),
    ("cold_start", "docker API create+start to first 200", "{docker_api_ms:dist}", ""),
    ("cold_start", "warm call right after a cold start", "{warm_call_ms:dist}", ""),
    ("cold_start", "cold start p50 / docker API create+start p50", "{p50_vs_docker_api:.2f}",
     "<= {cold_start_p50_vs_docker_api:g}"),
    ("paused", "start from paused via activator", "{activator_resume_ms:dist}",
     "p50 <= {paused_start_p50_ms:g} ms"),
    ("paused", "docker unpause to first 200", "{docker_unpause_ms:dist}", "floor ~15-25 ms"),
    ("deploy", "deploy to Ready, 1 KB, first build", "{first_build_s:dist s}",
     "<= {deploy_to_ready_s:g} s"),
    ("deploy", "deploy to Ready, 1 KB, cached rebuild", "{cached_rebuild_s:dist s}",
     "<= {deploy_to_ready_s:g} s"),
    ("idle", "idle server CPU, {functions} warm functions, {seconds:g} s",
     "{server_cpu_percent:.2f} % of a core", "< {idle_cpu_percent:g} %"),
    ("dashboard", "/ui first paint, {functions} functions (chromium, median of {loads})",
     "{first_paint_s:.3f} s", "< {first_paint_s:g} s"),
    ("dashboard", "pod sampler, one sampling of {pods} pods", "{sampler_cpu_ms_per_period:.2f}"
     " ms CPU = {sampler_core_percent:.3f} % of a core", ""),
    ("sampler", "server CPU, {functions} warm pods, {seconds:g} s, sampler on / off / on",
     "{on_off_on_cpu_percent:.2f} % of a core", ""),
    ("workflow", "{tasks} direct calls / workflow of {tasks} Task states", "{median_ms[direct]"
     ":.1f} / {median_ms[workflow]:.1f} ms, +{overhead_per_task_ms} ms per Task", ""),
    ("workflow", "workflow of {tasks} Pass states / of 1 Pass state", "{median_ms[pass]:.1f} / "
     "{median_ms[empty]:.1f} ms ({pass_state_ms} ms per state)", ""),
    ("workflow", "workflow engine per Task state (server's history)",
     "{server_side_ms[engine_per_task]} ms", ""),
    ("storm", "cold storm, {functions} functions at once, per round", "p50 {p50_ms_rounds:.0f}"
     ", max {max_ms_rounds:.0f} ms, {ok_rounds:d} of {functions} ok",
     "p50 <= {storm_p50_ms:g}, max <= {storm_max_ms:g} ms"),
    ("storm", "bare docker create+start, {functions} at once (the floor)",
     "{bare_docker_ms:dist}", ""),
    ("storm", "server CPU, storm start to 3 s after", "{server_cpu_percent_rounds:.0f} % of a "
     "core", ""),
)


def table(res: dict[str, Any]) -> str:
    """The figures of every part in ``res`` with their targets, one line each; the
    trigger part's, one per distribution it holds."""
    rows, fig = [("figure", "measured", "target")], Figures()
    for part, label, value, target in ROWS:
        with contextlib.suppress(KeyError):
            rows.append((fig.format(label, **res[part]), fig.format(value, **res[part]),
                         target.format(**TARGETS)))
    rows += [(k.replace("_", " "), dist(s), "") for k, s in res.get("trigger", {}).items()
             if k != "raw_s"]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "")
    mem = psutil.virtual_memory()
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_total_mib": mem.total >> 20,
            "memory_available_mib": mem.available >> 20,
            "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "kernel": platform.release(), "python": platform.python_version(),
            "docker": docker.from_env().version()["Version"]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench",
                                description=(__doc__ or "").split("\n\n")[0])
    add = p.add_argument
    add("--server", metavar="URL", help="a running server (default: start one)")
    add("--tick", type=float, help="its autoscaler tick (default 0.5 for the server started "
        "here, 2 with --server)")
    add("--server-pid", type=int, help="with --server: its process id (idle CPU, storm)")
    add("--only", nargs="*", choices=PARTS, help="run only these parts (default all)")
    add("--json", type=Path, default=Path(__file__).parent / "reports" / "bench.json",
        help="where the JSON goes (default %(default)s)")
    for flag, kind, default, text in (
            ("--trials", int, 20, "cold and paused start trials"),
            ("--requests", int, 2000, "sequential warm requests per path"),
            ("--concurrency", int, 32, "throughput connections"),
            ("--duration", float, 5.0, "seconds per throughput run"),
            ("--deploys", int, 5, "deploys of each kind"),
            ("--idle-functions", int, 40, "warm functions for idle and dashboard"),
            ("--idle-seconds", float, 30.0, "the idle CPU window"),
            ("--storm-functions", int, 40, "functions in the cold storm"),
            ("--storm-rounds", int, 3, "cold storms"),
            ("--tasks", int, 10, "Task states of the workflow part"),
            ("--runs", int, 30, "interleaved runs of the workflow part"),
            ("--files", int, 20, "files dropped by the trigger part"),
            ("--fires", int, 20, "schedule fires of the trigger part")):
        add(flag, type=kind, default=default, help=f"{text} (default {default:g})")
    add("--sampler-seconds", type=float, default=0.0, metavar="S", help="dashboard, own "
        "server only: its CPU over S s with the pod sampler on, off, on (three restarts)")
    add("--pipeline", type=int, default=0, metavar="N", help="trigger part: also drop each "
        "imagepipe test image N times (builds the Pillow functions, ~1 min)")
    return p


def run_parts(args: argparse.Namespace, parts: set[str], res: dict[str, Any], api: Client,
              server: ServerProcess | None, pid: int | None, tick: float, tmp: Path) -> None:
    """Every part but paused, on one server, in this order."""
    port = int(api.server.rsplit(":", 1)[1])

    def pid_now() -> int | None:  # the sampler restarts our own server: a new pid
        return server.proc.pid if server is not None and server.proc else pid
    if parts & {"warm", "throughput"}:
        log("warm, throughput: bench-warm (add.py, exactly one pod), direct vs activator")
        t = time.perf_counter()
        with functions(api, ["bench-warm"], {"scaling": ONE_POD}):
            res["first_deploy_on_this_registry_s"] = round(time.perf_counter() - t, 3)
            sock = str(api.ready_pod("bench-warm")["socket"])
            if "warm" in parts:
                res["warm_latency"] = bench_warm_latency(port, "bench-warm", sock, args.requests)
            if "throughput" in parts:
                res["throughput"] = bench_throughput(port, "bench-warm", sock,
                                                     args.concurrency, args.duration)
    if "cold" in parts:
        res["cold_start"] = bench_cold_start(api, port, args.trials, tick)
    if "deploy" in parts:
        res["deploy"] = bench_deploy(api, args.deploys)
    if parts & {"idle", "dashboard"}:
        log(f"idle, dashboard: {args.idle_functions} warm functions")
        names = [f"bench-idle-{i}" for i in range(args.idle_functions)]
        spec = {"scaling": ONE_POD, "resources": {"memoryMiB": 64}}
        with functions(api, names, spec, ready=1, settle=5.0) as box:
            if "idle" in parts and (now := pid_now()):
                res["idle"] = bench_idle(now, len(names), args.idle_seconds)
            elif "idle" in parts:
                log("idle: skipped (give --server-pid PID with --server)")
            if "dashboard" in parts:
                res["dashboard"] = bench_dashboard(api.server, names, box.client)
                if server is not None and args.sampler_seconds > 0:
                    res["sampler"] = bench_sampler(server, api, names, args.sampler_seconds)
    if "workflow" in parts:
        res["workflow"] = bench_workflow(api, args.tasks, args.runs)
    if "storm" in parts:
        res["storm"] = bench_storm(api, pid_now(), args.storm_functions, args.storm_rounds, tick)
    if "trigger" in parts:
        res["trigger"] = bench_trigger(api, tmp / "trigger", args.files, args.fires,
                                       args.pipeline)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = set(args.only or PARTS)
    tmp = Path(tempfile.mkdtemp(prefix="allinone-bench-"))
    res: dict[str, Any] = {"command": " ".join(["python -m loadtests.bench", *(
        sys.argv[1:] if argv is None else argv)]), "machine": machine(), "targets": TARGETS,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        if args.server:
            url, tick = args.server.rstrip("/"), args.tick or 2.0
            res.update(server=url, tick_seconds=tick)
            run_parts(args, parts, res, Client(url), None, args.server_pid, tick, tmp)
        elif parts - {"paused"}:
            with ServerProcess(tmp / "state", extra_args=OWN_SERVER_ARGS) as server:
                log(f"started allinone serve in {server.state_dir}")
                assert server.proc is not None
                res.update(server=server.url, tick_seconds=(tick := args.tick or server.tick))
                run_parts(args, parts, res, server.client, server, server.proc.pid, tick, tmp)
        if "paused" in parts:  # its own server: the other one's cold starts stay fresh
            log("paused: starting allinone serve --keep-paused 300")
            with ServerProcess(tmp / "state-paused",
                               extra_args=(*OWN_SERVER_ARGS, "--keep-paused", "300")) as s:
                res["paused"] = bench_paused(s.client, s.port, args.trials, s.tick)
    except Exception as exc:  # keep the figures of the parts that ran
        res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"stopped by an error:\n{traceback.format_exc()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["table"] = out = table(res)
    print(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nJSON: {args.json}")
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
