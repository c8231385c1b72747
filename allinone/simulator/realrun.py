"""The simulator against the real platform: ``calibrate`` and ``--validate``.

- ``allinone simulate calibrate [--server URL] -o MODEL.json`` deploys the sleep
  fixture, and measures on the running server: warm latency of a 0 ms request (the
  model's ``activator_overhead_ms``: activator + shim + client, as the validation's
  client sees it) and the cold-start latency of a request at zero (``pod_start_ms`` =
  cold minus warm minus the poke and sync delays, plus ``create_ms``: the cold trials
  wait ``STANDBY_SETTLE`` s at zero, so they start the function's standby container, as
  a function idle for a while does), ``--trials`` times each, medians; Docker's create
  of the function's image in the platform's sandbox (``create_ms``; the default when the
  Docker engine is not on this host);
  and ``PARALLEL_PROBE`` requests at once at zero, each needing its own pod, to see how
  many container starts the engine makes progress on at once (``parallel_starts``).
  What it did not measure keeps the default and is listed under ``measured.defaults``.
- ``allinone simulate --validate TRACE --spec JSON [--server URL] -o DIR`` deploys one
  sleep function per trace function with that spec, replays the trace against
  ``/function/NAME`` in real time (body ``{"ms": duration_ms}``), polls the pod list
  every ``POLL_SECONDS`` for peak pods and reads the activator's ``allinone_cold_starts``
  counter, then simulates the same trace with the same spec and prints, side by side,
  cold starts, peak pods and p50 latency (the bounded figures), and the p95 and the
  mean latency of the cold requests (the activator's ``allinone_cold_start_latency``
  histogram on the real side): when cold starts disagree, the cold latency says whether
  the pods started slower or faster during the replay than calibrate measured
  (``DIR/validation.json`` has both summaries). A second simulation takes its pod
  start times from the replay's own pods instead (``allinone_pod_start_seconds`` by
  kind: a created container's mean start as ``pod_start_ms``, its difference to a
  standby's start as ``create_ms``); its totals are printed under the table and kept
  as ``replay_starts`` in the JSON. It says how far the node's start times drifted from
  calibrate's; it is not the table's, because those means include starts that shared
  the node, which the model's sharing (``parallel_starts``) would count twice.

Load is bounded, because this replays on the machine it measures: at most
``MAX_SECONDS`` of trace, ``MAX_INVOCATIONS`` invocations and ``MAX_PER_SECOND`` arrivals
in any second; a trace over a bound is refused before anything is deployed. The
functions deployed are deleted afterwards, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from allinone import objects
from allinone.client import DEFAULT_SERVER, ApiError, Client, token_for
from allinone.config import DEFAULT_STATE_DIR
from allinone.simulator import model as rmodel
from allinone.simulator import report
from allinone.simulator.engine import FunctionResult, SimSpec, Simulation
from allinone.simulator.trace import Trace, load

# The function deployed for every trace function (fixtures/sleep.py's behaviour): it
# sleeps the invocation's duration, so the real service time is the trace's.
SLEEP_SOURCE = b"""import time


def run(ms=100, **kw):
    time.sleep(ms / 1000)
    return {"slept_ms": ms}
"""
MAX_SECONDS = 900.0
MAX_INVOCATIONS = 20_000
MAX_PER_SECOND = 50
POLL_SECONDS = 0.2
PARALLEL_PROBE = 4  # simultaneous cold starts calibrate makes to see the engine's parallelism
# s a cold trial waits at zero: the kubelet creates the standby container in ~0.1-0.3 s.
STANDBY_SETTLE = 1.0
BOUNDS = {"cold_starts": 0.10, "peak_pods": 0.10, "p50": 0.20}

# The activator's cold-start count and the summed latency of those requests, per function.
_COLD = re.compile(r'^allinone_cold_start(s_total|_latency_seconds_sum)\{function="([^"]+)"\} '
                   r'([0-9.e+]+)$', re.M)


# A pod's start by how its container started (the kubelet's START_KINDS), per function.
_POD_START = re.compile(r'^allinone_pod_start_seconds_(count|sum)\{function="([^"]+)",'
                        r'kind="([a-z]+)"\} ([0-9.e+]+)$', re.M)


class RealRunError(Exception):
    pass


def _client(server: str, token: str | None) -> Client:
    return Client(server, timeout=60, token=token_for(server, token, DEFAULT_STATE_DIR))


def deploy(client: Client, name: str, spec: dict[str, Any]) -> None:
    # A source of its own per deploy: images cached by source hash are then never shared
    # with another function or another run, whose clean-up could remove them under us.
    source = SLEEP_SOURCE + f"# {name} {uuid.uuid4().hex}\n".encode()
    fn = client.create(name, ("func.py", source), spec)
    fn = client.wait_built(name, fn["metadata"]["generation"], 600.0)
    if fn["status"].get("phase") != "Ready":
        raise RealRunError(f"{name} did not build: {fn['status'].get('message')}")


def _metrics(client: Client) -> str:
    try:
        return client.metrics()
    except ApiError as exc:
        raise RealRunError(f"GET /metrics: {exc}") from None


def cold_counts(client: Client) -> dict[str, tuple[float, float]]:
    """Per function: (cold starts, their summed latency in s) so far, from /metrics."""
    out: dict[str, tuple[float, float]] = {}
    for m in _COLD.finditer(_metrics(client)):
        count, total = out.get(m.group(2), (0.0, 0.0))
        if m.group(1) == "s_total":
            count = float(m.group(3))
        else:
            total = float(m.group(3))
        out[m.group(2)] = (count, total)
    return out


def pod_starts(client: Client, functions: list[str]) -> dict[str, tuple[float, float]]:
    """Per start kind, over ``functions``: (pods started, their summed start in s)."""
    out: dict[str, tuple[float, float]] = {}
    for m in _POD_START.finditer(_metrics(client)):
        if m.group(2) not in functions:
            continue
        count, total = out.get(m.group(3), (0.0, 0.0))
        if m.group(1) == "count":
            count += float(m.group(4))
        else:
            total += float(m.group(4))
        out[m.group(3)] = (count, total)
    return out


def replay_model(model: rmodel.RuntimeModel, before: dict[str, tuple[float, float]],
                 after: dict[str, tuple[float, float]]) -> rmodel.RuntimeModel:
    """``model`` with the start times the replay's own pods took: the mean start of a
    created container is ``pod_start_ms``; with standby starts too, ``create_ms`` is the
    difference (a standby start alone gives ``pod_start_ms`` = it + ``create_ms``); the
    mean resume (a parked pod or a frozen standby) is ``unpause_ms``."""
    def mean_ms(kind: str) -> float | None:
        (c0, s0), (c1, s1) = before.get(kind, (0.0, 0.0)), after.get(kind, (0.0, 0.0))
        return (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else None

    created, standby, resumed = mean_ms("created"), mean_ms("standby"), mean_ms("resumed")
    pod_start, create = model.pod_start_ms, model.create_ms
    unpause = model.unpause_ms if resumed is None else resumed
    if created is not None:
        pod_start = created
        if standby is not None:
            create = max(0.0, created - standby)
    elif standby is not None:
        pod_start = standby + create
    measured = {**model.measured, "from_replay": {
        "created_start_ms_mean": None if created is None else round(created, 3),
        "standby_start_ms_mean": None if standby is None else round(standby, 3),
        "resumed_ms_mean": None if resumed is None else round(resumed, 3)}}
    return dataclasses.replace(model, pod_start_ms=round(pod_start, 3),
                               create_ms=round(create, 3), unpause_ms=round(unpause, 3),
                               measured=measured)


def _cold_mean_ms(count: float, total: float) -> float | None:
    return round(total / count * 1000, 3) if count > 0 else None


def sim_cold_mean_ms(result: FunctionResult) -> float | None:
    """The mean latency of a simulated function's cold requests (answered or not, as
    the activator's histogram counts them), in ms."""
    lat = [la for la, c in zip(result.latency, result.cold, strict=True) if c]
    return _cold_mean_ms(len(lat), sum(lat))


async def _replay(server: str, token: str | None, trace: Trace,
                  names: list[str]) -> tuple[list[tuple[int, float, float, int]],
                                             dict[str, int]]:
    """Fire every invocation at its arrival time; poll pods. Returns
    ``(function index, arrival s, latency s, status)`` rows and peak pods per name."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: list[tuple[int, float, float, int]] = []
    peaks = dict.fromkeys(names, 0)
    done = asyncio.Event()
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=180)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.5

        async def one(i: int) -> None:
            at = trace.arrival[i]
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            name = names[trace.fn[i]]
            start = time.perf_counter()
            try:
                async with session.post(f"{server}/function/{name}",
                                        json={"ms": trace.duration[i] * 1000}) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 599
            out.append((trace.fn[i], at, time.perf_counter() - start, status))

        async def poll() -> None:
            url = f"{server}/api/v1/namespaces/serverless/pods"
            while not done.is_set():
                try:
                    async with session.get(url, headers=headers) as resp:
                        items = (await resp.json()).get("items", [])
                    counts: dict[str, int] = {}
                    for pod in items:
                        fn = pod.get("spec", {}).get("function")
                        counts[fn] = counts.get(fn, 0) + 1
                    for n in names:
                        peaks[n] = max(peaks[n], counts.get(n, 0))
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
                await asyncio.sleep(POLL_SECONDS)

        poller = asyncio.ensure_future(poll())
        await asyncio.gather(*(one(i) for i in range(len(trace))))
        done.set()
        await poller
    return out, peaks


def check_bounds(trace: Trace) -> None:
    if trace.span > MAX_SECONDS:
        raise RealRunError(f"the trace lasts {trace.span:.0f} s; validation replays at most "
                           f"{MAX_SECONDS:.0f} s in real time (cut it shorter)")
    if len(trace) > MAX_INVOCATIONS:
        raise RealRunError(f"the trace has {len(trace)} invocations; at most "
                           f"{MAX_INVOCATIONS} are replayed against a real server")
    per_second: dict[int, int] = {}
    for at in trace.arrival:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    busiest = max(per_second.items(), key=lambda kv: kv[1], default=(0, 0))
    if busiest[1] > MAX_PER_SECOND:
        raise RealRunError(f"second {busiest[0]} of the trace has {busiest[1]} arrivals; at "
                           f"most {MAX_PER_SECOND} per second are replayed on this machine")
    for name in trace.functions:
        try:
            objects.validate_name(name)
        except objects.ValidationError as exc:
            raise RealRunError(f"trace function {name!r} cannot be deployed: {exc}") from None


def _pct(values: list[float], p: str) -> float | None:
    """A percentile in ms by the rule the simulator's report uses (nearest rank), so
    both sides of the table are the same statistic."""
    return report.percentiles(values)[p]


def _rel(real: float | None, sim: float | None) -> float | None:
    if real is None or sim is None:
        return None
    if real == 0:
        return 0.0 if sim == 0 else float("inf")
    return abs(sim - real) / real


def validate(trace: Trace, spec: dict[str, Any], model: rmodel.RuntimeModel, server: str,
             token: str | None, out: Path, *, tick: float, seed: int = 0) -> dict[str, Any]:
    check_bounds(trace)
    sim_spec = SimSpec.from_user(spec)
    api_spec = {k: v for k, v in spec.items() if k not in ("keepPausedSeconds", "standby")}
    client = _client(server, token)
    deployed: list[str] = []
    try:
        for name in trace.functions:
            deploy(client, name, api_spec)
            deployed.append(name)
        before, starts_before = cold_counts(client), pod_starts(client, trace.functions)
        rows, peaks = asyncio.run(_replay(server.rstrip("/"), client.token, trace,
                                          trace.functions))
        after, starts_after = cold_counts(client), pod_starts(client, trace.functions)
    finally:
        for name in deployed:
            try:
                client.delete(name)
            except ApiError as exc:
                print(f"warning: could not delete {name}: {exc}", file=sys.stderr)
    replayed = replay_model(model, starts_before, starts_after)
    drifted = report.summary(Simulation(trace, sim_spec, replayed, seed=seed, tick=tick).run(),
                             {"tick": tick, "runtime_model": replayed.to_json()})
    results = Simulation(trace, sim_spec, model, seed=seed, tick=tick).run()
    sim = report.summary(results, {"tick": tick, "runtime_model": model.to_json()})
    table: list[dict[str, Any]] = []
    by_name = {r.name: r for r in results}
    for i, name in enumerate(trace.functions):
        ok = [la for f, _, la, st in rows if f == i and st == 200]
        (c0, s0), (c1, s1) = before.get(name, (0.0, 0.0)), after.get(name, (0.0, 0.0))
        real = {"cold_starts": c1 - c0, "cold_mean_ms": _cold_mean_ms(c1 - c0, s1 - s0),
                "peak_pods": peaks[name], "p50": _pct(ok, "p50"), "p95": _pct(ok, "p95"),
                "failed": sum(1 for f, _, _, st in rows if f == i and st != 200)}
        fig = sim["functions"][name]
        simulated = {"cold_starts": fig["cold_starts"],
                     "cold_mean_ms": sim_cold_mean_ms(by_name[name]),
                     "peak_pods": fig["peak_pods"],
                     "p50": fig["latency_ms"]["p50"], "p95": fig["latency_ms"]["p95"],
                     "failed": fig["failed"]}
        table.append({"function": name, "real": real, "sim": simulated})
    all_ok = [la for _, _, la, st in rows if st == 200]
    def cold_mean(side: str) -> float | None:
        count = sum(r[side]["cold_starts"] for r in table)
        total = sum(r[side]["cold_starts"] * (r[side]["cold_mean_ms"] or 0) for r in table)
        return round(total / count, 3) if count else None

    total_real = {"cold_starts": sum(r["real"]["cold_starts"] for r in table),
                  "cold_mean_ms": cold_mean("real"),
                  "peak_pods": sum(r["real"]["peak_pods"] for r in table),
                  "p50": _pct(all_ok, "p50"), "p95": _pct(all_ok, "p95"),
                  "failed": sum(r["real"]["failed"] for r in table)}
    t = sim["total"]
    total_sim = {"cold_starts": t["cold_starts"], "cold_mean_ms": cold_mean("sim"),
                 "peak_pods": t["peak_pods"],
                 "p50": t["latency_ms"]["p50"], "p95": t["latency_ms"]["p95"],
                 "failed": t["failed"]}
    table.append({"function": "total", "real": total_real, "sim": total_sim})
    for row in table:
        row["relative_error"] = {k: _rel(row["real"][k], row["sim"][k]) for k in BOUNDS}
        row["within_bounds"] = all(e is not None and e <= BOUNDS[k]
                                   for k, e in row["relative_error"].items())
    data = {"rows": table, "bounds": BOUNDS, "spec": spec, "simulation": sim,
            "replay_starts": {"total": drifted["total"],
                              "runtime_model": drifted["run"]["runtime_model"]}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["function", "cold real", "cold sim", "cold mean real ms", "cold mean sim ms",
            "peak real", "peak sim", "p50 real ms", "p50 sim ms", "p95 real ms", "p95 sim ms",
            "within bounds"]
    cells = [head]
    for r in rows:
        re_, si = r["real"], r["sim"]
        cells.append([r["function"], f"{re_['cold_starts']:g}", str(si["cold_starts"]),
                      f"{re_.get('cold_mean_ms') or 0:.1f}", f"{si.get('cold_mean_ms') or 0:.1f}",
                      str(re_["peak_pods"]), str(si["peak_pods"]), f"{re_['p50'] or 0:.1f}",
                      f"{si['p50'] or 0:.1f}", f"{re_.get('p95') or 0:.1f}",
                      f"{si.get('p95') or 0:.1f}", "yes" if r["within_bounds"] else "no"])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main_validate(args: argparse.Namespace) -> int:
    trace = load(Path(args.trace), durations=Path(args.durations) if args.durations else None,
                 duration_ms=args.duration_ms, seed=args.seed)
    spec = json.loads(args.spec) if args.spec else {}
    model = rmodel.load(Path(args.runtime_model)) if args.runtime_model else rmodel.RuntimeModel()
    try:
        data = validate(trace, spec, model, args.server, args.token, Path(args.output),
                        tick=args.tick, seed=args.seed)
    except (RealRunError, ApiError, objects.ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(data["rows"]))
    used = data["simulation"]["run"]["runtime_model"]
    rep = data["replay_starts"]
    print(f"pod starts: calibrated {used['pod_start_ms']:.0f} ms (create "
          f"{used['create_ms']:.0f} ms); the replay's own pods "
          f"{rep['runtime_model']['pod_start_ms']:.0f} ms (create "
          f"{rep['runtime_model']['create_ms']:.0f} ms), with which the simulation has "
          f"{rep['total']['cold_starts']} cold starts, p50 "
          f"{rep['total']['latency_ms']['p50']} ms")
    print(f"bounds: cold starts and peak pods within {BOUNDS['cold_starts']:.0%}, p50 within "
          f"{BOUNDS['p50']:.0%}; details in {Path(args.output) / 'validation.json'}")
    return 0


# -- calibrate -----------------------------------------------------------------------

def _wait_zero(client: Client, name: str, timeout: float = 300.0) -> None:
    try:
        client.wait(lambda: not client.pods(name), timeout, f"{name} at zero", 0.2)
    except ApiError as exc:
        raise RealRunError(f"{name} did not scale to zero: {exc}") from None


def _invoke(client: Client, name: str) -> float:
    start = time.perf_counter()
    resp = client.invoke(name, data=b'{"ms": 0}')
    if resp.status_code != 200:
        raise RealRunError(f"invoking {name} answered {resp.status_code}: {resp.text[:200]!r}")
    return time.perf_counter() - start


def parallel_starts(one_ms: float, all_ms: float, probe: int = 0) -> int:
    """Container starts in progress at once, from one start taking ``one_ms`` and
    ``probe`` simultaneous starts all done after ``all_ms``: with k at a time they take
    ceil(probe / k) x one_ms, so k = probe x one / all, rounded, within 1..probe.

    E.g. one start 100 ms, 4 done after 400 ms -> 1; after 100 ms -> 4; 200 ms -> 2.
    """
    probe = probe or PARALLEL_PROBE
    if one_ms <= 0 or all_ms <= 0:
        return 1
    return max(1, min(probe, round(probe * one_ms / all_ms)))


def calibrate(server: str, token: str | None, trials: int,
              base: rmodel.RuntimeModel) -> rmodel.RuntimeModel:
    client = _client(server, token)
    name = f"calib-{uuid.uuid4().hex[:6]}"
    # A short window and grace so the function is back at zero quickly between trials;
    # one request per pod and a target of 1, so PARALLEL_PROBE requests at zero ask for
    # as many pods under every KPA rule set.
    deploy(client, name, {"scaling": {
        "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 1,
        "containerConcurrency": 1, "target": 1, "targetUtilizationPercentage": 100,
        "maxScale": PARALLEL_PROBE}})
    try:
        colds, warms, lasts = [], [], []
        creates = _docker_creates(client.get(name)["status"]["image"], trials)
        starts = pod_starts(client, [name])
        for _ in range(trials):
            _wait_zero(client, name)
            time.sleep(STANDBY_SETTLE)
            colds.append(_invoke(client, name))
            warms += [_invoke(client, name) for _ in range(10)]
        if pod_starts(client, [name]).get("resumed", (0.0, 0.0))[0] > \
                starts.get("resumed", (0.0, 0.0))[0]:
            raise RealRunError(
                "the server resumed frozen standby containers (serve's default "
                "--standby frozen), so its cold starts are not container starts: "
                "calibrate against a server started with --standby created")
        for _ in range(trials):
            # PARALLEL_PROBE requests at zero at once: each needs its own new pod, so the
            # last answer comes after one start if the engine starts them all at once,
            # after PARALLEL_PROBE starts if it starts them one after another.
            _wait_zero(client, name)
            with ThreadPoolExecutor(PARALLEL_PROBE) as pool:
                lasts.append(max(pool.map(lambda _: _invoke(client, name),
                                          range(PARALLEL_PROBE))))
    finally:
        try:
            client.delete(name)
        except ApiError as exc:
            print(f"warning: could not delete {name}: {exc}", file=sys.stderr)
    warm = statistics.median(warms) * 1000
    cold = statistics.median(colds) * 1000
    create = statistics.median(creates) * 1000 if creates else base.create_ms
    # The cold trials started a standby: the full start adds Docker's create.
    pod_start = max(0.0, cold - warm - base.poke_delay_ms - base.sync_delay_ms) + create
    last = statistics.median(lasts) * 1000
    parallel = parallel_starts(pod_start, last - warm - base.poke_delay_ms
                               - base.sync_delay_ms)
    return rmodel.RuntimeModel(
        pod_start_ms=round(pod_start, 3), create_ms=round(create, 3),
        unpause_ms=base.unpause_ms,
        parallel_starts=parallel, activator_overhead_ms=round(warm, 3),
        poke_delay_ms=base.poke_delay_ms, sync_delay_ms=base.sync_delay_ms,
        measured={"server": server, "trials": trials, "cold_ms_median": round(cold, 3),
                  "warm_ms_median": round(warm, 3),
                  f"last_of_{PARALLEL_PROBE}_at_zero_ms_median": round(last, 3),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "docker_create_ms_median": round(create, 3) if creates else None,
                  "defaults": ["unpause_ms", "poke_delay_ms", "sync_delay_ms"]
                  + ([] if creates else ["create_ms"])})


def _docker_creates(image: str, trials: int) -> list[float]:
    """Seconds Docker takes to create a container of ``image`` in the platform's sandbox
    (the platform's own create: :meth:`DockerRuntime.create`), ``trials`` times; [] when
    no Docker engine answers here (a remote server: the default stands)."""
    import tempfile

    from allinone.kubelet.poddir import PodDirs
    from allinone.runtime.base import ContainerSpec
    from allinone.runtime.docker import DockerRuntime
    try:
        runtime = DockerRuntime(f"calibrate-{uuid.uuid4().hex[:8]}")
    except Exception as exc:
        print(f"note: no Docker engine here ({exc}); create_ms keeps its default",
              file=sys.stderr)
        return []
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = PodDirs(Path(tmp) / "pods")
        for i in range(trials):
            pod = f"calibrate-{i}"
            spec = ContainerSpec(pod=pod, function="calibrate", image=image,
                                 socket_dir=dirs.create(pod), user=dirs.user)
            start = time.perf_counter()
            cid = asyncio.run(runtime.create(spec))
            out.append(time.perf_counter() - start)
            asyncio.run(runtime.remove(cid))
    runtime.close()
    return out


def main_calibrate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="allinone simulate calibrate",
                                description="measure the runtime model on a running server")
    p.add_argument("--server", default=DEFAULT_SERVER)
    p.add_argument("--token")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.json")
    a = p.parse_args(argv)
    if a.trials < 1:
        p.error("--trials must be at least 1")
    try:
        m = calibrate(a.server, a.token, a.trials, rmodel.RuntimeModel())
    except (RealRunError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rmodel.save(m, Path(a.output))
    print(json.dumps(m.to_json(), indent=2))
    return 0
