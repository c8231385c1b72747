"""Benchmarks behind DESIGN.md's "What fast means here", side by side in one run.

    python -m loadtests.bench [--server URL --tick S [--paused-server URL]] [--trials 20]
                              [--requests 2000] [--concurrency 32] [--duration 5]
                              [--deploys 5] [--json loadtests/reports/bench.json]
                              [--only warm throughput cold paused deploy]

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
   reported), with the same small load generator in pure Python (asyncio on uvloop,
   raw HTTP/1.1) for both. On 2 cores the load generator competes with the server and
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

It prints a table (with DESIGN.md's targets) and writes everything, raw trials
included, as JSON. Numbers from a shared 2-core machine are noisy: compare the columns
of one run, quote medians, and run it twice before believing a difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
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

import requests

from loadtests.report import parse_metric, percentile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
ADD_BODY = b'{"x": 1, "y": 2}'
HEADERS = {"Content-Type": "application/json"}
THROUGHPUT_ROUNDS = 3  # runs per path and tool, alternating; the median is reported
TARGETS = {
    "cold_start_p50_vs_docker_api": 1.0,  # cold start p50 <= bare create+start p50
    "paused_start_p50_ms": 20.0,
    "added_latency_p50_ms": 0.5,
    "throughput_ratio": 0.5,  # activator / direct-to-pod
    "deploy_to_ready_s": 1.0,
}
# A pod's address for the bench: a TCP port (the activator) or a Unix socket path (a pod).
Target = int | str


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict[str, float | int | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)
    return {"n": len(values), "min": r(min(values)) if values else None,
            "p50": r(percentile(values, 50)), "p90": r(percentile(values, 90)),
            "p99": r(percentile(values, 99)), "max": r(max(values)) if values else None,
            "mean": r(sum(values) / len(values)) if values else None}


# -- the API ---------------------------------------------------------------------------

class Api:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False

    def get(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.base}/api/v1/functions/{name}", timeout=10)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def create(self, name: str, filename: str, data: bytes, spec: dict[str, Any]) -> float:
        """POST the function; returns the perf_counter time just before the request."""
        t = time.perf_counter()
        resp = self.http.post(f"{self.base}/api/v1/functions",
                              data={"name": name, "spec": json.dumps(spec)},
                              files={"source": (filename, data)}, timeout=60)
        if resp.status_code != 201:
            raise RuntimeError(f"deploying {name}: HTTP {resp.status_code} {resp.text[:300]}")
        return t

    def wait_ready(self, name: str, timeout: float = 300, interval: float = 0.01) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            fn = self.get(name)
            st = fn["status"]
            if st.get("observedGeneration") == fn["metadata"]["generation"]:
                if st.get("phase") == "Ready":
                    return fn
                if st.get("phase") == "Failed":
                    raise RuntimeError(f"{name} failed to build: {st.get('message')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not Ready after {timeout} s")
            time.sleep(interval)

    def deploy(self, name: str, path: Path, spec: dict[str, Any]) -> dict[str, Any]:
        self.create(name, path.name, path.read_bytes(), spec)
        return self.wait_ready(name)

    def pods(self, name: str) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.base}/api/v1/namespaces/serverless/pods",
                             params={"function": name}, timeout=10)
        resp.raise_for_status()
        items: list[dict[str, Any]] = resp.json()["items"]
        return items

    def delete(self, name: str) -> None:
        self.http.delete(f"{self.base}/api/v1/functions/{name}", timeout=10)

    def metric(self, metric: str, function: str) -> float:
        text = self.http.get(f"{self.base}/metrics", timeout=10).text
        value = parse_metric(text, metric, function)
        return 0.0 if value is None else value


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ready_pod_socket(api: Api, name: str) -> str:
    def find() -> str | None:
        for pod in api.pods(name):
            st = pod.get("status", {})
            if st.get("ready") and st.get("phase") == "Running":
                return str(st["socket"])
        return None
    path: str = wait_for(find, 120, f"a ready pod of {name}")
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("pod", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


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

class _LoadConn(asyncio.Protocol):
    """One keep-alive connection of the load generator: send, read the whole answer, repeat."""

    def __init__(self, request: bytes, stop_at: float, out: dict[str, Any],
                 done: asyncio.Future[None]) -> None:
        self.request, self.stop_at, self.out, self.done = request, stop_at, out, done
        self.buf = b""
        self.t = 0.0
        self.transport: Any = None  # asyncio's or uvloop's transport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.t = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            size = int(m.group(1)) if m else 0
            total = end + 4 + size
            if len(self.buf) < total:
                return
            status = self.buf[9:12]
            self.buf = self.buf[total:]
            now = time.perf_counter()
            if status == b"200":
                self.out["ok"] += 1
                self.out["lat"].append((now - self.t) * 1000)
            else:
                self.out["errors"] += 1
            if now >= self.stop_at:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(target: Target, path: str, conns: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(ADD_BODY)}\r\n\r\n").encode() + ADD_BODY
    out: dict[str, Any] = {"ok": 0, "errors": 0, "lat": []}
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    dones = []
    for _ in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        factory = lambda d=done: _LoadConn(request, stop_at, out, d)  # type: ignore[misc]  # noqa: E731
        if isinstance(target, int):
            await loop.create_connection(factory, "127.0.0.1", target)
        else:
            await loop.create_unix_connection(factory, target)
        dones.append(done)
    await asyncio.wait_for(asyncio.gather(*dones), seconds + 30)
    out["seconds"] = time.perf_counter() - t0
    return out


def python_load(target: Target, path: str, conns: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load with ``conns`` connections; req/s and latency under load."""
    try:
        import uvloop
        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_load(target, path, conns, 0.5))  # warm-up: connections, pools, the pod's threads
    out = runner(_load(target, path, conns, seconds))
    lat = stats(out["lat"])
    return {"rps": round(out["ok"] / out["seconds"], 1), "errors": out["errors"],
            "requests": out["ok"], "latency_ms": lat}


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

def healthz_until_200(target: Target, timeout: float = 30.0) -> float:
    """Poll GET /healthz every 1 ms; perf_counter time of the first 200."""
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
        time.sleep(0.001)
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


def bench_cold_start(api: Api, server_port: int, trials: int, tick: float) -> dict[str, Any]:
    import docker

    name = "bench-cold"
    spec = {"scaling": {"maxScale": 1, "scaleToZeroGracePeriodSeconds": 1,
                        "stableWindowSeconds": 6}}
    fn = api.deploy(name, FIXTURES / "add.py", spec)
    image, handler = fn["status"]["image"], fn["spec"].get("handler", "run")
    client = docker.from_env()
    sandbox = Sandbox()

    def at_zero() -> bool:
        st = api.get(name)["status"]
        return not st.get("readyReplicas") and not st.get("desiredReplicas") \
            and not api.pods(name)

    rows = []
    try:
        for i in range(trials):
            wait_for(at_zero, 60 + 10 * tick, f"{name} at zero")
            s0 = api.metric("allinone_cold_start_latency_seconds_sum", name)
            caller = Caller(server_port, f"/function/{name}")
            try:
                cold = caller.call()
                warm = caller.call()
            finally:
                caller.close()
            s1 = api.metric("allinone_cold_start_latency_seconds_sum", name)
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
        api.delete(name)
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


def bench_paused(api: Api, server_port: int, trials: int, tick: float) -> dict[str, Any]:
    """Scale-from-zero when the server keeps scaled-down pods paused (--keep-paused)."""
    import docker

    name = "bench-paused"
    spec = {"scaling": {"maxScale": 1, "scaleToZeroGracePeriodSeconds": 1,
                        "stableWindowSeconds": 6}}
    fn = api.deploy(name, FIXTURES / "add.py", spec)
    image, handler = fn["status"]["image"], fn["spec"].get("handler", "run")
    client = docker.from_env()

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
            wait_for(parked, 60 + 10 * tick, f"{name} at zero with its container paused")
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
        api.delete(name)
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


def bench_deploy(api: Api, n: int) -> dict[str, Any]:
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
                t = api.create(name, "func.py", src, {})
                fn = api.wait_ready(name)
                out.append(time.perf_counter() - t)
                if kind == "first":
                    build_s.append(float(fn["status"].get("buildSeconds") or 0))
            log(f"deploy {i + 1}/{n}: first build {first[-1]:.3f} s, cached {cached[-1]:.3f} s")
    finally:
        for name in names:
            api.delete(name)
    return {"source_bytes": 1024, "first_build_s": stats(first),
            "cached_rebuild_s": stats(cached), "server_build_seconds": stats(build_s),
            "poll_interval_s": 0.01}


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
        n = c["activator_cold_ms"]["n"]
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
            rows.append((f"{label} ({s['n']} trials)",
                         f"p50 {s['p50']:.1f} / p90 {s['p90']:.1f} / max {s['max']:.1f} ms",
                         "", target))
    dp = res.get("deploy")
    if dp:
        for key, label in (("first_build_s", "deploy to Ready, 1 KB, first build"),
                           ("cached_rebuild_s", "deploy to Ready, 1 KB, cached rebuild")):
            s = dp[key]
            rows.append((f"{label} ({s['n']})",
                         f"p50 {s['p50']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f})",
                         "", f"<= {TARGETS['deploy_to_ready_s']:g} s"))
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
        return bench_paused(Api(url), int(url.rsplit(":", 1)[1]), args.trials, tick)
    from allinone.testing import ServerProcess
    assert tmp is not None
    server = ServerProcess(Path(tmp) / "state-paused", extra_args=("--keep-paused", "300"))
    log(f"paused: starting allinone serve --keep-paused 300 in {server.state_dir}")
    server.start()
    try:
        log(f"paused: {args.trials} trials, then bare docker unpause")
        return bench_paused(Api(server.url), server.port, args.trials, server.tick)
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
    p.add_argument("--only", nargs="*", choices=["warm", "throughput", "cold", "paused",
                                                 "deploy"], help="run only these parts")
    args = p.parse_args(argv)
    parts = set(args.only or ["warm", "throughput", "cold", "paused", "deploy"])

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
    api = Api(url)
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
            pod_socket = ready_pod_socket(api, "bench-warm")
            if "warm" in parts:
                log(f"warm latency: {args.requests} sequential requests each, direct to the "
                    f"pod's socket {pod_socket} and through the activator")
                res["warm_latency"] = bench_warm_latency(server_port, "bench-warm", pod_socket,
                                                         args.requests)
            if "throughput" in parts:
                res["throughput"] = bench_throughput(server_port, "bench-warm", pod_socket,
                                                     args.concurrency, args.duration)
            api.delete("bench-warm")
        if "cold" in parts:
            log(f"cold start: {args.trials} trials, interleaved with bare docker starts")
            res["cold_start"] = bench_cold_start(api, server_port, args.trials, tick)
        if "deploy" in parts:
            log(f"deploy to Ready: {args.deploys} first builds and cached rebuilds")
            res["deploy"] = bench_deploy(api, args.deploys)
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
