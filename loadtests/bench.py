"""Benchmarks behind DESIGN.md's "What fast means here", side by side in one run.

    python -m loadtests.bench [--server URL --tick S [--paused-server URL]] [--trials 20]
                              [--requests 2000] [--concurrency 32] [--duration 5]
                              [--deploys 5] [--json loadtests/reports/bench.json]
                              [--only warm throughput cold paused deploy idle storm]

Without ``--server`` it starts its own ``allinone serve`` (``ServerProcess``: temporary
state, free ports, tick 0.5 s) and stops it at the end. It measures:

1. **Warm latency**, one client, sequential, keep-alive (``http.client``): the same
   ``add.py`` pod called directly on its Unix socket (``status.socket`` of the Pod
   object; the bench runs on the server's machine as a user who may open it) and
   through the activator (``POST /function/NAME``, which reaches the pod over that
   socket), in interleaved blocks of 100 so that drift and noise hit both alike.
   p50/p99 and the added latency.
2. **Throughput**, ``--concurrency`` keep-alive connections for ``--duration`` s, direct
   (to the pod's socket) vs activator, alternating, 3 runs each (the median is
   reported), with the same load generator for both (:mod:`loadtests.loadgen`: asyncio
   on uvloop, raw HTTP/1.1). On 2 cores the load generator competes with the server and
   the pod for CPU: through the activator three busy processes share two cores,
   directly only two, so the ratio understates the activator.
3. **Cold start** through the activator over ``--trials`` trials (a function with a 1 s
   scale-to-zero grace period: each trial waits until it is at zero, pods gone), next
   to the same image started bare with the same sandbox, interleaved trial by trial:
   ``docker run -d`` (the CLI) and the Docker API's create + start (what the platform
   does), each timed to the first 200 on ``/healthz`` over the container's socket.
4. **Start from paused** (``allinone serve --keep-paused``: a scaled-down pod is frozen
   and the next scale-up resumes it) over ``--trials`` trials, on a second server the
   bench starts with that option (or ``--paused-server URL``), next to a bare ``docker
   unpause`` of the same image to the first 200 on ``/healthz`` over its socket.
5. **Deploy to Ready** of a 1 KB function: a first build of new source (unique bytes
   each time) and a cached rebuild (the same bytes under a new name), ``--deploys``
   times each, timed from the POST to ``phase: Ready``.
6. **Idle CPU**: the server process's own CPU (``/proc/PID/stat``; etcd and the
   registry not counted) over ``--idle-seconds`` with ``--idle-functions`` warm
   functions (minScale 1) and no traffic, on a second server the bench starts at the
   default autoscaler tick (2 s, what ``allinone serve`` runs), or ``--server-pid``.
7. **Cold storm**: ``--storm-functions`` distinct functions, all at zero, invoked at the
   same moment (one request each, one thread each), ``--storm-rounds`` times: every
   answer, p50 and max, and the server's CPU from the storm to 3 s after it; then as
   many bare containers created and started at once (the engine's floor).

It prints a table (with DESIGN.md's targets) and writes everything, raw trials
included, as JSON. Numbers from a shared 2-core machine are noisy: compare the columns
of one run, quote medians, and run it twice before believing a difference.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allinone.client import Client, poll
from allinone.testing import UnixHTTPConnection
from loadtests.loadgen import measure
from loadtests.report import summarize

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
ADD_BODY = b'{"x": 1, "y": 2}'
HEADERS = {"Content-Type": "application/json"}
PARTS = ("warm", "throughput", "cold", "paused", "deploy", "idle", "storm")
THROUGHPUT_ROUNDS = 3  # runs per path and tool, alternating; the median is reported
TARGETS = {
    "cold_start_p50_vs_docker_api": 1.0,  # cold start p50 <= bare create+start p50
    "paused_start_p50_ms": 20.0,
    "added_latency_p50_ms": 0.5,
    "throughput_ratio": 0.5,  # activator / direct-to-pod
    "deploy_to_ready_s": 1.0,
    "idle_cpu_percent": 1.0,
    "storm_p50_ms": 2000.0,  # 40 functions at zero invoked at once (issue 10)
    "storm_max_ms": 3000.0,
}
# A pod's address for the bench: a TCP port (the activator) or a Unix socket path (a pod).
Target = int | str


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict[str, float | int | None]:
    return summarize(values, (50, 90, 99), 4)


def connect(target: Target, timeout: float) -> socket.socket:
    if isinstance(target, int):
        return socket.create_connection(("127.0.0.1", target), timeout=timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(target)
    except OSError:
        s.close()
        raise
    return s


# -- 1. warm latency -------------------------------------------------------------------

class Caller:
    """One keep-alive HTTP/1.1 connection, POSTing the same body again and again."""

    def __init__(self, target: Target, path: str) -> None:
        self.conn = (http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                     if isinstance(target, int) else UnixHTTPConnection(target, timeout=30))
        self.path = path

    def call(self) -> float:
        """One request; its latency in ms (raises unless the answer is 200)."""
        t = time.perf_counter_ns()
        self.conn.request("POST", self.path, ADD_BODY, HEADERS)
        resp = self.conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter_ns() - t) / 1e6
        if resp.status != 200:
            raise RuntimeError(f"POST {self.path}: HTTP {resp.status} {body[:200]!r}")
        return ms

    def close(self) -> None:
        self.conn.close()


def bench_warm_latency(server_port: int, function: str, pod_socket: str,
                       n: int, block: int = 100) -> dict[str, Any]:
    direct = Caller(pod_socket, "/")
    via = Caller(server_port, f"/function/{function}")
    try:
        for _ in range(200):  # warm both paths: connections, caches, the JIT-less rest
            direct.call()
            via.call()
        lat: dict[str, list[float]] = {"direct": [], "activator": []}
        for i in range(max(1, n // block)):
            order = [("direct", direct), ("activator", via)]
            if i % 2:
                order.reverse()
            for key, caller in order:
                lat[key].extend(caller.call() for _ in range(block))
    finally:
        direct.close()
        via.close()
    d, a = stats(lat["direct"]), stats(lat["activator"])
    assert d["p50"] is not None and a["p50"] is not None
    assert d["p99"] is not None and a["p99"] is not None
    return {"requests_each": len(lat["direct"]), "direct_ms": d, "activator_ms": a,
            "added_p50_ms": round(float(a["p50"]) - float(d["p50"]), 4),
            "added_p99_ms": round(float(a["p99"]) - float(d["p99"]), 4)}


# -- 2. throughput -----------------------------------------------------------------

def python_load(target: Target, path: str, conns: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load with ``conns`` connections (:mod:`loadtests.loadgen`)."""
    if isinstance(target, int):
        return measure(f"http://127.0.0.1:{target}{path}", conns, seconds, ADD_BODY)
    return measure(f"http://pod{path}", conns, seconds, ADD_BODY, unix=target)


def bench_throughput(server_port: int, function: str, pod_socket: str, conns: int,
                     seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": conns, "seconds": seconds}
    # One load generator for both paths (wrk cannot speak to a Unix socket).
    tools: list[tuple[str, Callable[..., dict[str, Any] | None]]] = [("python", python_load)]
    for tool, fn in tools:
        res: dict[str, Any] = {}
        # activator, direct, activator, direct...: ROUNDS each, the median run reported
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "activator": []}
        for _ in range(THROUGHPUT_ROUNDS):
            targets: tuple[tuple[str, Target, str], ...] = (
                ("activator", server_port, f"/function/{function}"), ("direct", pod_socket, "/"))
            for key, target, path in targets:
                log(f"throughput {tool} {key} ({conns} connections, {seconds:g} s)")
                r = fn(target, path, conns, seconds)
                if r is not None:
                    runs[key].append(r)
        for key, rs in runs.items():
            good = sorted((r for r in rs if "rps" in r), key=lambda r: r["rps"])
            res[key] = good[len(good) // 2] if good else (rs[0] if rs else None)
            res[key + "_runs_rps"] = [r.get("rps") for r in rs]
        if res.get("direct") and res.get("activator") and "rps" in res["direct"] \
                and "rps" in res["activator"]:
            res["ratio"] = round(res["activator"]["rps"] / res["direct"]["rps"], 3)
        out[tool] = res
    return out


# -- 3. cold start -----------------------------------------------------------------

def healthz_until_200(target: Target, timeout: float = 30.0, poll: float = 0.001) -> float:
    """Poll GET /healthz every ``poll`` s; perf_counter time of the first 200."""
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with connect(target, timeout=1) as s:
                s.sendall(req)
                head = s.recv(64)
                if head[9:12] == b"200":
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"nothing answered /healthz on {target} within {timeout} s")


class Sandbox:
    """A bare container's socket directory and the platform's own sandbox settings for it
    (``host_config_kwargs``, the same uid and mount), so "bare" differs only by the
    platform's work, not by a cheaper container."""

    def __init__(self) -> None:
        from allinone.kubelet.poddir import PodDirs
        self.tmp = tempfile.mkdtemp(prefix="ab-")
        self.dirs = PodDirs(Path(self.tmp) / "pods")

    def spec(self, image: str, handler: str) -> tuple[str, Any, str]:
        """``(name, ContainerSpec, host socket path)`` of a new bare pod."""
        from allinone.runtime.base import ContainerSpec
        name = f"allinone-bench-{uuid.uuid4().hex[:8]}"
        d = self.dirs.create(name)
        spec = ContainerSpec(pod=name, function="bench", image=image, socket_dir=d,
                             user=self.dirs.user, env={"ALLINONE_HANDLER": handler})
        return name, spec, self.dirs.connect_path(name)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def docker_run_cli(sandbox: Sandbox, image: str, handler: str) -> float:
    """``docker run -d`` of the function image, sandboxed as a pod, to the first 200 (ms)."""
    from allinone.runtime.docker import LOG_MAX_FILES, LOG_MAX_SIZE, container_env
    name, spec, sock = sandbox.spec(image, handler)
    env = [x for k, v in container_env(spec).items() for x in ("-e", f"{k}={v}")]
    cmd = ["docker", "run", "-d", "--network", "none", "--name", name, "--user", spec.user,
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
           "--tmpfs", f"/tmp:rw,nosuid,nodev,size={spec.tmp_mib}m,mode=1777",
           "-v", f"{spec.socket_dir}:/run/allinone", "--log-opt", f"max-size={LOG_MAX_SIZE}",
           "--log-opt", f"max-file={LOG_MAX_FILES}", *env,
           "--memory", "256m", "--cpus", "1", "--pids-limit", "256", image]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = healthz_until_200(sock)
    finally:
        proc.wait(30)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        sandbox.dirs.remove(name)
    return (ready - t) * 1000


def docker_api_create(client: Any, sandbox: Sandbox, image: str,
                      handler: str) -> tuple[str, str, Any]:
    """Create (not start) a bare pod the way the platform does: ``(name, socket, id)``."""
    from allinone.runtime.docker import container_env, host_config_kwargs
    api = client.api
    name, spec, sock = sandbox.spec(image, handler)
    host_config = api.create_host_config(**host_config_kwargs(spec))
    cid = api.create_container(image, name=name, host_config=host_config, detach=True,
                               user=spec.user, environment=container_env(spec))["Id"]
    return name, sock, cid


def docker_api_start(client: Any, sandbox: Sandbox, image: str, handler: str) -> float:
    """The Docker API's create + start (the platform's two calls) to the first 200 (ms)."""
    api = client.api
    t = time.perf_counter()
    name, sock, cid = docker_api_create(client, sandbox, image, handler)
    try:
        api.start(cid)
        ready = healthz_until_200(sock)
    finally:
        api.remove_container(cid, force=True)
        sandbox.dirs.remove(name)
    return (ready - t) * 1000


def deploy_one_pod(api: Client, name: str) -> tuple[str, str, Any]:
    """``add.py`` as ``name`` (one pod at most, at zero 1 s after its last request): its
    image, its handler and a Docker client for the bare runs beside it."""
    import docker

    fn = api.deploy(name, FIXTURES / "add.py", {"scaling": {
        "maxScale": 1, "scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6}})
    return fn["status"]["image"], fn["spec"]["handler"], docker.from_env()


def bench_cold_start(api: Client, server_port: int, trials: int, tick: float) -> dict[str, Any]:
    name = "bench-cold"
    image, handler, client = deploy_one_pod(api, name)
    sandbox = Sandbox()

    rows = []
    try:
        for i in range(trials):
            api.wait_replicas(name, 0, 0, 60 + 10 * tick, interval=0.02, no_pods=True)
            s0 = float(api.metric("allinone_cold_start_latency_seconds_sum", name) or 0)
            caller = Caller(server_port, f"/function/{name}")
            try:
                cold = caller.call()
                warm = caller.call()
            finally:
                caller.close()
            s1 = float(api.metric("allinone_cold_start_latency_seconds_sum", name) or 0)
            cli = docker_run_cli(sandbox, image, handler)
            sdk = docker_api_start(client, sandbox, image, handler)
            rows.append({"trial": i + 1, "activator_cold_ms": round(cold, 3),
                         "warm_call_ms": round(warm, 3),
                         "activator_server_ms": round((s1 - s0) * 1000, 3),
                         "docker_run_cli_ms": round(cli, 3), "docker_api_ms": round(sdk, 3)})
            log(f"cold start {i + 1}/{trials}: activator {cold:.0f} ms, docker run {cli:.0f} "
                f"ms, docker API {sdk:.0f} ms")
    finally:
        client.close()
        sandbox.close()
        api.delete(name, missing_ok=True)
    col = {k: stats([float(r[k]) for r in rows]) for k in
           ("activator_cold_ms", "warm_call_ms", "activator_server_ms", "docker_run_cli_ms",
            "docker_api_ms")}
    return {"trials": rows, "image": image, **col}


def bare_unpause_floor(client: Any, image: str, handler: str, trials: int) -> list[float]:
    """``docker unpause`` of a paused container to the first 200 on /healthz (ms)."""
    api = client.api
    sandbox = Sandbox()
    _, sock, cid = docker_api_create(client, sandbox, image, handler)
    out = []
    try:
        api.start(cid)
        healthz_until_200(sock)
        for _ in range(trials):
            api.pause(cid)
            time.sleep(0.2)
            t = time.perf_counter()
            api.unpause(cid)
            out.append((healthz_until_200(sock) - t) * 1000)
    finally:
        api.remove_container(cid, force=True)
        sandbox.close()
    return out


def bench_paused(api: Client, server_port: int, trials: int, tick: float) -> dict[str, Any]:
    """Scale-from-zero when the server keeps scaled-down pods paused (--keep-paused)."""
    name = "bench-paused"
    image, handler, client = deploy_one_pod(api, name)

    def parked() -> bool:
        st = api.get(name)["status"]
        if st.get("readyReplicas") or st.get("desiredReplicas") or api.pods(name):
            return False
        return bool(client.containers.list(all=True, filters={
            "label": [f"allinone.function={name}"], "status": "paused"}))

    rows = []
    try:
        Caller(server_port, f"/function/{name}").call()  # the first pod, to be paused
        for i in range(trials):
            poll(parked, 60 + 10 * tick, f"{name} at zero with its container paused")
            caller = Caller(server_port, f"/function/{name}")
            try:
                resumed = caller.call()
            finally:
                caller.close()
            rows.append({"trial": i + 1, "activator_resume_ms": round(resumed, 3)})
            log(f"paused start {i + 1}/{trials}: {resumed:.1f} ms")
        floor = bare_unpause_floor(client, image, handler, trials)
    finally:
        client.close()
        api.delete(name, missing_ok=True)
    return {"trials": rows, "image": image,
            "activator_resume_ms": stats([float(r["activator_resume_ms"]) for r in rows]),
            "docker_unpause_ms": stats(floor)}


# -- 4. deploy to Ready ----------------------------------------------------------------

def one_kb_function(tag: str) -> bytes:
    head = f'"""Benchmark function {tag}: adds two numbers."""\n\n\ndef run(x=1, y=2):\n' \
           "    return x + y\n\n"
    pad = "# " + "padding to one kilobyte " * 3 + "\n"
    body = head
    while len(body) + len(pad) <= 1024:
        body += pad
    return (body + "#" * (1023 - len(body)) + "\n").encode()


def bench_deploy(api: Client, n: int) -> dict[str, Any]:
    first: list[float] = []
    cached: list[float] = []
    build_s: list[float] = []
    names: list[str] = []
    try:
        for i in range(n):
            src = one_kb_function(uuid.uuid4().hex)
            for kind, out in (("first", first), ("cached", cached)):
                name = f"bench-deploy-{kind}-{i}-{uuid.uuid4().hex[:4]}"
                names.append(name)
                t = time.perf_counter()
                api.create(name, ("func.py", src), {})
                fn = api.wait_ready(name, interval=0.01)
                out.append(time.perf_counter() - t)
                if kind == "first":
                    build_s.append(float(fn["status"].get("buildSeconds") or 0))
            log(f"deploy {i + 1}/{n}: first build {first[-1]:.3f} s, cached {cached[-1]:.3f} s")
    finally:
        for name in names:
            api.delete(name, missing_ok=True)
    return {"source_bytes": 1024, "first_build_s": stats(first),
            "cached_rebuild_s": stats(cached), "server_build_seconds": stats(build_s),
            "poll_interval_s": 0.01}


# -- 6. idle CPU with warm functions --------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process so far, not of its children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle(api: Client, pid: int, n: int, seconds: float) -> dict[str, Any]:
    """The server's own CPU (etcd and the registry are other processes) over ``seconds``
    with ``n`` warm functions (minScale 1, 64 MiB each) and no traffic."""
    names = [f"bench-idle-{i}" for i in range(n)]
    spec = {"scaling": {"minScale": 1, "maxScale": 1}, "resources": {"memoryMiB": 64}}
    try:
        for name in names:
            api.deploy(name, FIXTURES / "add.py", spec, wait=False)
        for name in names:
            api.wait_ready(name, timeout=600)
            api.wait_replicas(name, 1, 1, timeout=600)
        time.sleep(5.0)  # the last starts' follow-up (probes, status writes) settles
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
    finally:
        for name in names:
            api.delete(name, missing_ok=True)
    return {"functions": n, "seconds": round(wall, 1), "server_cpu_s": round(cpu, 3),
            "server_cpu_percent": round(100 * cpu / wall, 2)}



# -- 7. cold storm: many functions at zero invoked at the same moment -------------------

def bare_storm(client: Any, image: str, handler: str, n: int,
               workers: int | None = None) -> list[float]:
    """The engine's floor: ``n`` bare pods created and started at once (``workers``
    threads, default one each), each timed from the common start to its first 200 on
    /healthz (ms), polled every 5 ms (40 threads polling every 1 ms would measure the
    bench's own contention)."""
    from concurrent.futures import ThreadPoolExecutor
    sandbox = Sandbox()
    made: list[tuple[str, Any]] = []

    def one(t0: float) -> float:
        name, sock, cid = docker_api_create(client, sandbox, image, handler)
        made.append((name, cid))
        client.api.start(cid)
        return (healthz_until_200(sock, poll=0.005) - t0) * 1000

    try:
        with ThreadPoolExecutor(workers or n) as pool:
            t0 = time.perf_counter()
            return sorted(pool.map(one, [t0] * n))
    finally:
        for name, cid in made:
            with contextlib.suppress(Exception):
                client.api.remove_container(cid, force=True)
            sandbox.dirs.remove(name)
        sandbox.close()


def bench_storm(api: Client, pid: int | None, n: int, rounds: int,
                tick: float) -> dict[str, Any]:
    """``n`` distinct functions, all at zero, each invoked once at the same moment (one
    thread per request), ``rounds`` times; then the same number of bare containers
    started at once (the engine's floor). Also the server's CPU from the storm's start
    until 3 s after its last answer (``pid`` given)."""
    from concurrent.futures import ThreadPoolExecutor

    import docker

    names = [f"bench-storm-{i}" for i in range(n)]
    spec = {"scaling": {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6},
            "resources": {"memoryMiB": 64}}
    rows: list[dict[str, Any]] = []
    client = docker.from_env(max_pool_size=n)
    try:
        for name in names:
            api.deploy(name, FIXTURES / "add.py", spec, wait=False)
        image = handler = ""
        for name in names:
            fn = api.wait_ready(name, timeout=600)
            image, handler = fn["status"]["image"], fn["spec"]["handler"]
        server_port = int(api.server.rsplit(":", 1)[1])

        def call(name: str) -> tuple[int, float]:
            # A long client timeout: a slow storm is measured, not cut off (status 0 is a
            # connection error or no answer within 120 s).
            conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=120)
            t = time.perf_counter()
            try:
                conn.request("POST", f"/function/{name}", ADD_BODY, HEADERS)
                resp = conn.getresponse()
                resp.read()
                return resp.status, (time.perf_counter() - t) * 1000
            except OSError:
                return 0, (time.perf_counter() - t) * 1000
            finally:
                conn.close()

        with ThreadPoolExecutor(n) as pool:
            for i in range(rounds):
                for name in names:
                    api.wait_replicas(name, 0, 0, 60 + 10 * tick, interval=0.05, no_pods=True)
                c0 = cpu_seconds(pid) if pid else 0.0
                t0 = time.perf_counter()
                got = list(pool.map(call, names))
                storm_s = time.perf_counter() - t0
                time.sleep(3.0)
                cpu = cpu_seconds(pid) - c0 if pid else None
                ms = [m for _, m in got]
                ok = sum(1 for st, _ in got if st == 200)
                row: dict[str, Any] = {"round": i + 1, "ok": ok, "requests": n,
                                       "failed": sorted(st for st, _ in got if st != 200),
                                       "latency_ms": stats(ms), "storm_s": round(storm_s, 3)}
                if cpu is not None:
                    row["server_cpu_s"] = round(cpu, 3)
                    row["server_cpu_percent"] = round(100 * cpu / (storm_s + 3.0), 1)
                rows.append(row)
                lat = row["latency_ms"]
                log(f"storm {i + 1}/{rounds}: {ok}/{n} ok, p50 {lat['p50']:.0f} ms, max "
                    f"{lat['max']:.0f} ms, server CPU "
                    f"{row.get('server_cpu_s', '-')} s")
        floor = bare_storm(client, image, handler, n)
        log(f"storm floor: {n} bare containers at once: p50 {stats(floor)['p50']:.0f} ms, "
            f"max {max(floor):.0f} ms")
    finally:
        client.close()
        for name in names:
            api.delete(name, missing_ok=True)
    p50s = [float(r["latency_ms"]["p50"]) for r in rows]
    maxes = [float(r["latency_ms"]["max"]) for r in rows]
    return {"functions": n, "rounds": rows, "p50_ms_median": sorted(p50s)[len(p50s) // 2],
            "max_ms_worst": max(maxes), "all_ok": all(r["ok"] == n for r in rows),
            "bare_docker_ms": stats(floor)}


# -- the run ---------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "cpu": cpu, "free_m": sh("free", "-m"),
            "loadavg_at_start": " ".join(os.getloadavg().__repr__().strip("()").split(", ")),
            "kernel": platform.release(), "python": platform.python_version(),
            "docker": sh("docker", "version", "--format", "{{.Server.Version}}")}


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    w = res.get("warm_latency")
    if w:
        d, a = w["direct_ms"], w["activator_ms"]
        rows.append(("warm latency p50, direct / activator",
                     f"{d['p50']:.3f} / {a['p50']:.3f} ms", f"+{w['added_p50_ms']:.3f} ms",
                     f"<= +{TARGETS['added_latency_p50_ms']} ms added"))
        rows.append(("warm latency p99, direct / activator",
                     f"{d['p99']:.3f} / {a['p99']:.3f} ms", f"+{w['added_p99_ms']:.3f} ms", ""))
    t = res.get("throughput")
    if t:
        x = t.get("python")
        if x and "ratio" in x:
            rows.append((f"throughput ({t['concurrency']} conns, median of "
                         f"{THROUGHPUT_ROUNDS}), direct / activator",
                         f"{x['direct']['rps']:.0f} / {x['activator']['rps']:.0f} req/s",
                         f"ratio {x['ratio']:.2f}",
                         f"ratio >= {TARGETS['throughput_ratio']:g}"))
    c = res.get("cold_start")
    if c:
        n = c["activator_cold_ms"]["count"]
        for key, label, target in (
                ("activator_cold_ms", "cold start via activator", "p50 <= docker API p50"),
                ("docker_run_cli_ms", "docker run (CLI) to first 200", ""),
                ("docker_api_ms", "docker API create+start to first 200", ""),
                ("warm_call_ms", "warm call right after a cold start", "")):
            s = c[key]
            rows.append((f"{label} ({n} trials)",
                         f"p50 {s['p50']:.0f} / p90 {s['p90']:.0f} / max {s['max']:.0f} ms"
                         if s["p50"] and s["p50"] >= 10 else
                         f"p50 {s['p50']:.2f} / p90 {s['p90']:.2f} / max {s['max']:.2f} ms",
                         "", target))
        ratio = c["activator_cold_ms"]["p50"] / c["docker_api_ms"]["p50"]
        rows.append(("cold start p50 / docker API create+start p50", f"{ratio:.2f}", "",
                     f"<= {TARGETS['cold_start_p50_vs_docker_api']:g}"))
    pz = res.get("paused")
    if pz:
        for key, label, target in (
                ("activator_resume_ms", "start from paused via activator",
                 f"p50 <= {TARGETS['paused_start_p50_ms']:g} ms"),
                ("docker_unpause_ms", "docker unpause to first 200", "floor ~15-25 ms")):
            s = pz[key]
            rows.append((f"{label} ({s['count']} trials)",
                         f"p50 {s['p50']:.1f} / p90 {s['p90']:.1f} / max {s['max']:.1f} ms",
                         "", target))
    dp = res.get("deploy")
    if dp:
        for key, label in (("first_build_s", "deploy to Ready, 1 KB, first build"),
                           ("cached_rebuild_s", "deploy to Ready, 1 KB, cached rebuild")):
            s = dp[key]
            rows.append((f"{label} ({s['count']})",
                         f"p50 {s['p50']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f})",
                         "", f"<= {TARGETS['deploy_to_ready_s']:g} s"))
    idle = res.get("idle")
    if idle:
        at = f", tick {idle['tick_seconds']:g} s" if "tick_seconds" in idle else ""
        rows.append((f"idle server CPU, {idle['functions']} warm functions, "
                     f"{idle['seconds']:g} s{at}", f"{idle['server_cpu_percent']:.2f} % of a core",
                     "", f"< {TARGETS['idle_cpu_percent']:g} %"))
    st = res.get("storm")
    if st:
        lat = [r["latency_ms"] for r in st["rounds"]]
        rows.append((f"cold storm, {st['functions']} functions at once ({len(lat)} rounds)",
                     "p50 " + " / ".join(f"{x['p50']:.0f}" for x in lat) + ", max "
                     + " / ".join(f"{x['max']:.0f}" for x in lat) + " ms",
                     "all 200" if st["all_ok"] else "ERRORS",
                     f"p50 <= {TARGETS['storm_p50_ms']:g}, max <= {TARGETS['storm_max_ms']:g} ms"))
        b = st["bare_docker_ms"]
        rows.append((f"bare docker create+start, {st['functions']} at once (the floor)",
                     f"p50 {b['p50']:.0f} / max {b['max']:.0f} ms", "", ""))
        cpu = [r.get("server_cpu_percent") for r in st["rounds"]]
        if all(c is not None for c in cpu):
            rows.append(("server CPU, storm start to 3 s after",
                         " / ".join(f"{c:.0f}" for c in cpu) + " % of a core", "", ""))
    widths = [max(len(r[i]) for r in [("figure", "measured", "", "target"), *rows])
              for i in range(4)]
    lines = []
    for r in [("figure", "measured", "", "target"), *rows]:
        lines.append("  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def run_paused_part(args: argparse.Namespace, tmp: str | None,
                    tick: float) -> dict[str, Any] | None:
    """The paused part needs a server with --keep-paused: the one given, or a second own one
    (not the first: its cold starts must be fresh containers)."""
    if args.server and not args.paused_server:
        log("paused: skipped (give --paused-server URL of a server run with --keep-paused)")
        return None
    if args.paused_server:
        url = args.paused_server.rstrip("/")
        log(f"paused: {args.trials} trials on {url}")
        return bench_paused(Client(url), int(url.rsplit(":", 1)[1]), args.trials, tick)
    from allinone.testing import ServerProcess
    assert tmp is not None
    server = ServerProcess(Path(tmp) / "state-paused", extra_args=("--keep-paused", "300"))
    log(f"paused: starting allinone serve --keep-paused 300 in {server.state_dir}")
    server.start()
    try:
        log(f"paused: {args.trials} trials, then bare docker unpause")
        return bench_paused(Client(server.url), server.port, args.trials, server.tick)
    finally:
        server.stop()
        server.cleanup_containers()


def run_idle_part(args: argparse.Namespace, tmp: str | None) -> dict[str, Any]:
    """Idle CPU on a second own server at the default autoscaler tick (what ``allinone
    serve`` runs; the first server's 0.5 s tick is there to make cold-start trials
    quick, and the autoscaler's idle work is per tick)."""
    from allinone.config import Settings
    from allinone.testing import ServerProcess
    assert tmp is not None
    tick = Settings.autoscaler_tick_seconds
    server = ServerProcess(Path(tmp) / "state-idle", tick=tick)
    log(f"idle: starting allinone serve (tick {tick:g} s) in {server.state_dir}; "
        f"{args.idle_functions} warm functions, server CPU over {args.idle_seconds:g} s")
    server.start()
    try:
        assert server.proc is not None
        out = bench_idle(Client(server.url), server.proc.pid, args.idle_functions,
                         args.idle_seconds)
        return {**out, "tick_seconds": tick}
    finally:
        server.stop()
        server.cleanup_containers()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--server", metavar="URL", help="a running server (default: start one)")
    p.add_argument("--tick", type=float, default=None,
                   help="its autoscaler tick (default 0.5 for the server started here, 2 "
                        "with --server)")
    p.add_argument("--trials", type=int, default=20, help="cold start trials (default 20)")
    p.add_argument("--requests", type=int, default=2000,
                   help="sequential warm requests per path (default 2000)")
    p.add_argument("--concurrency", type=int, default=32, help="throughput connections")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    p.add_argument("--deploys", type=int, default=5, help="deploys of each kind (default 5)")
    p.add_argument("--json", type=Path, default=ROOT / "loadtests" / "reports" / "bench.json",
                   help="where the JSON goes (default %(default)s)")
    p.add_argument("--paused-server", metavar="URL",
                   help="with --server: a server started with --keep-paused, for the paused "
                        "part (without --server the bench starts one itself)")
    p.add_argument("--idle-functions", type=int, default=40,
                   help="warm functions for the idle CPU figure (default 40)")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="its window (default 30)")
    p.add_argument("--server-pid", type=int,
                   help="with --server: its process id, for the idle CPU figure")
    p.add_argument("--storm-functions", type=int, default=40,
                   help="functions in the cold storm (default 40)")
    p.add_argument("--storm-rounds", type=int, default=3, help="cold storms (default 3)")
    p.add_argument("--only", nargs="*", choices=PARTS, help="run only these parts")
    args = p.parse_args(argv)
    parts = set(args.only or PARTS)

    server = None
    tmp = None
    if args.server:
        url = args.server.rstrip("/")
        tick = args.tick if args.tick is not None else 2.0
    else:
        from allinone.testing import ServerProcess
        tmp = tempfile.mkdtemp(prefix="allinone-bench-")
        server = ServerProcess(Path(tmp) / "state")
        url, tick = server.url, (args.tick if args.tick is not None else server.tick)
        if parts - {"paused"}:
            log(f"starting allinone serve in {server.state_dir}")
            server.start()
        else:
            server = None  # only the paused part, which starts its own
    server_port = int(url.rsplit(":", 1)[1])
    api = Client(url)
    res: dict[str, Any] = {"command": " ".join(["python -m loadtests.bench", *(argv or
                                                                               sys.argv[1:])]),
                           "server": url, "tick_seconds": tick, "machine": machine(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "targets": TARGETS}
    try:
        if parts & {"warm", "throughput"}:
            log("deploying bench-warm (add.py, exactly one pod)")
            t = time.perf_counter()
            api.deploy("bench-warm", FIXTURES / "add.py",
                       {"scaling": {"minScale": 1, "maxScale": 1}})
            res["first_deploy_on_this_registry_s"] = round(time.perf_counter() - t, 3)
            pod_socket = str(api.ready_pod("bench-warm")["socket"])
            if "warm" in parts:
                log(f"warm latency: {args.requests} sequential requests each, direct to the "
                    f"pod's socket {pod_socket} and through the activator")
                res["warm_latency"] = bench_warm_latency(server_port, "bench-warm", pod_socket,
                                                         args.requests)
            if "throughput" in parts:
                res["throughput"] = bench_throughput(server_port, "bench-warm", pod_socket,
                                                     args.concurrency, args.duration)
            api.delete("bench-warm", missing_ok=True)
        if "cold" in parts:
            log(f"cold start: {args.trials} trials, interleaved with bare docker starts")
            res["cold_start"] = bench_cold_start(api, server_port, args.trials, tick)
        if "deploy" in parts:
            log(f"deploy to Ready: {args.deploys} first builds and cached rebuilds")
            res["deploy"] = bench_deploy(api, args.deploys)
        pid = server.proc.pid if server is not None and server.proc else args.server_pid
        if "idle" in parts and server is not None:
            res["idle"] = run_idle_part(args, tmp)
        elif "idle" in parts and pid:
            log(f"idle: {args.idle_functions} warm functions, server CPU over "
                f"{args.idle_seconds:g} s")
            res["idle"] = bench_idle(api, pid, args.idle_functions, args.idle_seconds)
        elif "idle" in parts:
            log("idle: skipped (give --server-pid PID with --server)")
        if "storm" in parts:
            log(f"storm: {args.storm_functions} functions at zero invoked at once, "
                f"{args.storm_rounds} rounds")
            res["storm"] = bench_storm(api, pid, args.storm_functions, args.storm_rounds, tick)
    finally:
        if server is not None:
            server.stop()
            server.cleanup_containers()
    try:
        if "paused" in parts:
            res["paused"] = run_paused_part(args, tmp, tick)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out = table(res)
    print(out)
    res["table"] = out
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
