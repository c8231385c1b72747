"""The load-test scenarios as data: fixture, spec, parameters and options, a driver and
criteria as small functions of the run.

Their functions take the run (``Run``: the locust adapter's ``Runner``,
:mod:`loadtests.locustfile`): ``drive`` sets user counts (most scenarios are phases of
``(users, seconds, label)``), opens and closes the tap (``run.sending``) and marks
events; ``judge`` fills the report's figures (one ``headline`` of the key facts) and
returns the criteria, each with the sentence that says it. Nothing here imports locust
or gevent.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from allinone import objects
from allinone.autoscaler.kpa import decider_spec
from loadtests.report import Criterion, Records, at_most, summarize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
POLL_INTERVAL = 0.1  # s between the driver's reads while it waits for a state
COLD_METRIC = "allinone_cold_start_latency_seconds"
EXPECTED_FORMULA = ("expected = min(maxScale, max(minScale, ceil(concurrency / "
                    "(target x targetUtilizationPercentage / 100))))")
Run = Any  # loadtests.locustfile.Runner (locust's types are not strict-clean)
T = TypeVar("T")
Phase = tuple[int, float, str]  # users, seconds, the event's label


class ScenarioError(Exception):
    """The scenario cannot go on (set-up failed, a state was never reached)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    fixture: str  # a file in fixtures/
    body: dict[str, Any]
    spec: dict[str, Any]
    params: dict[str, tuple[Any, Any]]  # name: (value, value with --short)
    drive: Callable[[Run], object]
    judge: Callable[[Run], list[Criterion]]
    # the params a locust option --NAME-IN-DASHES sets: name: (type, help)
    options: dict[str, tuple[Callable[[str], Any], str]] = field(default_factory=dict)
    start: str = "zero"  # the state set-up waits for: "zero", "floor" (minScale ready), ""
    users: str = "loop"  # "loop": back to back while sending; "gate": one per opened gate
    request_name: str = "invoke"
    key_latency: str = ""  # the request name the --max-p50/p95-ms thresholds check
    workflow: str = ""  # what the users call: this workflow, else the function
    function: str = ""  # the deployed name (default lt-NAME)
    slow: bool = False  # left out of --short's default list (CI); run when named
    setup: Callable[[Run], None] | None = None  # after the deploy; run.functions grows
    check: Callable[[Run, Any], str | None] | None = None  # why a 200's body is wrong
    requests: str = "requests"  # what the runner's no-failure criterion calls them


# -- what the judges share ---------------------------------------------------------------

def latency(run: Run, name: str | None = None, after: float = -math.inf,
            before: float = math.inf) -> dict[str, Any]:
    """The latency summary of the requests ``name`` (default all) started in the span."""
    return summarize([float(r[1]) for r in run.report.records
                      if name in (None, r[3]) and after <= r[0] < before])


def fmt_ms(x: float | None) -> str:
    """'-' when missing, 1 decimal below 10 ms, else whole ms."""
    return "-" if x is None else f"{x:.1f}" if abs(x) < 10 else f"{x:.0f}"


def pcts(lat: Mapping[str, Any], qs: Iterable[str] = ("p50", "p95")) -> str:
    return ", ".join(f"{q} {fmt_ms(lat[q])} ms" for q in qs)


def ready_peak(samples: Iterable[Mapping[str, Any]]) -> int | None:
    return max((s["ready"] for s in samples), default=None)


def no_failures(records: Records, what: str = "requests") -> Criterion:
    failed = [r for r in records if not r[2]]
    return Criterion("no failed request", bool(records) and not failed, len(failed), 0,
                     f"no {what} were made, so nothing was shown to work" if not records else
                     f"all {len(records)} {what} succeeded" if not failed else
                     f"{len(failed)} of {len(records)} {what} failed, first: "
                     f"{failed[0][4] or '?'}")


def executions(run: Run) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """A workflow scenario's count and latency of executions, kept as figures."""
    f = run.report.figures
    f.update(executions=len(run.report.records), execution_latency_ms=latency(run))
    return f["executions"], f["execution_latency_ms"], f


def ran(run: Run) -> Criterion:
    n = len(run.report.records)
    return Criterion("executions ran", bool(n), n, 1, f"{n} executions ran (at least 1 wanted)")


def load(run: Run, phases: Iterable[Phase], settle: float = 1.0) -> list[float]:
    """The phases back to back, then silence until the last answer (plus ``settle`` s, for
    the picture); when each phase started."""
    starts = []
    for users, seconds, label in phases:
        run.sending = False  # nobody starts a request while locust adds users: the event
        run.set_users(users)  # marks when the phase's load begins
        run.sending = True
        starts.append(run.event(label))
        run.sleep(seconds)
    run.sending = False
    run.event("load stops")
    run.wait_until(lambda: run.in_flight == 0, run.request_timeout(), "the last answers")
    run.sleep(settle)
    return starts


# -- cold_start ------------------------------------------------------------------------

def counted_cold(api: Any, function: str, call: Callable[[], T]) -> tuple[T, bool | None,
                                                                         float | None]:
    """``call()``'s result; whether the server counted exactly one cold start of
    ``function`` meanwhile (None when /metrics is unreadable); then the activator's own ms
    of it (its /metrics histogram sum). Also :mod:`loadtests.bench`."""
    def metrics() -> list[Any]:  # float, or None when /metrics is unreadable
        return [api.metric(COLD_METRIC + k, function) for k in ("_sum", "_count")]
    before = metrics()
    out = call()
    after = metrics()
    cold = None if None in (before[1], after[1]) else after[1] - before[1] == 1
    server_ms = (round((after[0] - before[0]) * 1000.0, 3)
                 if cold and None not in (before[0], after[0]) else None)
    return out, cold, server_ms


def cold_drive(run: Run) -> None:
    for n in range(1, run.p["trials"] + 1):
        waited = run.wait_zero()
        run.event(f"trial {n}: at zero")
        (ok, cold_ms, _), cold, server_ms = counted_cold(run.api, run.function,
                                                         lambda: run.call("cold start"))
        ok_warm, warm_ms, _ = run.call("warm")
        run.p.setdefault("rows", []).append({
            "trial": n, "at_zero_t": round(waited, 3), "ok": ok and ok_warm, "cold": cold,
            "cold_ms": round(cold_ms, 3), "warm_call_ms": round(warm_ms, 3),
            "pod_wait_ms": round(cold_ms - warm_ms, 3), "server_cold_ms": server_ms})
    run.sleep(1.0)  # so that the replicas of the last trial are in the picture


def cold_judge(run: Run) -> list[Criterion]:
    tr, want, f = run.p.pop("rows", []), run.p["trials"], run.report.figures
    f.update({"trials": tr, **{k: summarize([t[k] for t in tr if t[k] is not None]) for k in
                              ("cold_ms", "warm_call_ms", "pod_wait_ms", "server_cold_ms")},
              "split": "call = warm request right after; pod wait = cold - warm; server = "
                       "activator latency of the cold request (/metrics histogram sum)"})
    f["headline"] = (
        f"cold start over {len(tr)} trials: {pcts(f['cold_ms'], ('p50', 'p95', 'max'))}; "
        f"p50 split: pod wait {fmt_ms(f['pod_wait_ms']['p50'])} ms + call "
        f"{fmt_ms(f['warm_call_ms']['p50'])} ms; activator-side "
        f"{fmt_ms(f['server_cold_ms']['p50'])} ms")
    not_cold = [t["trial"] for t in tr if t["cold"] is not True]
    return [Criterion("every trial was cold", not not_cold, len(tr) - len(not_cold), len(tr),
                      "each trial's request was counted as a cold start" if not not_cold else
                      f"trials {not_cold} were not counted as cold starts (a pod was still "
                      "up, or /metrics unreadable)"),
            Criterion("all trials ran", len(tr) == want, len(tr), want,
                      f"{len(tr)} of {want} trials ran")]


# -- scale_up --------------------------------------------------------------------------

def per_pod_target(scaling: Mapping[str, Any] | None) -> float:
    """Concurrent requests one pod should carry, as the KPA computes it (10 x 70 % = 7)."""
    return round(decider_spec(scaling or {}).target_value, 9)


def expected_replicas(concurrency: float, scaling: Mapping[str, Any] | None) -> int:
    """The pods the KPA settles on for a steady ``concurrency`` (EXPECTED_FORMULA)."""
    s = objects.scaling({"scaling": scaling or {}})
    raw = math.ceil(concurrency / per_pod_target(s)) if concurrency > 0 else 0
    return int(min(s["maxScale"], max(s["minScale"], raw)))


def step_drive(run: Run) -> None:
    p = run.p
    p["step_t"] = load(run, [(0, p["idle_s"], f"idle ({p['idle_s']:g} s)"), (
        p["step_users"], p["hold_s"], f"step to {p['step_users']} users")], 0.5)[1]


def step_judge(run: Run) -> list[Criterion]:
    p, rep, f = run.p, run.report, run.report.figures
    users, step, within = p["step_users"], p.get("step_t"), p["within"]
    if step is None:
        return [Criterion("step happened", False, None, None, "the step never happened")]
    expected, per_pod = expected_replicas(users, run.scaling), per_pod_target(run.scaling)
    end = step + p["hold_s"]
    held = [s for s in rep.samples if step <= s["t"] <= end]
    ready, wanted = (next((s["t"] for s in rep.samples if s["t"] >= step and  # first time
                           (s.get(k) or 0) >= expected), None) for k in ("ready", "desired"))
    took = None if ready is None else round(ready - step, 3)
    conc = [s["stable"] for s in held[-4:] if s.get("stable") is not None]
    f.update({
        "expected_replicas": expected, "expected_formula": EXPECTED_FORMULA,
        "expected_inputs": {"concurrency": users, "per_pod": per_pod},
        "desired_reached_after_s": None if wanted is None else round(wanted - step, 3),
        "ready_reached_after_s": took, "ready_peak": ready_peak(held),
        "ready_at_end": held[-1]["ready"] if held else None,
        "autoscaler_stable_concurrency_at_end": round(conc[-1], 3) if conc else None,
        "latency_during_hold_ms": (lat := latency(run, after=step, before=end)),
        "throughput_during_hold_rps": round(lat["count"] / p["hold_s"], 2),
        "deadline": {"from": step, "to": step + within,
                     "label": f"{expected} ready within {within:g} s"}})
    f["headline"] = (
        f"step to {users} users: expected {expected} pods = ceil({users} / {per_pod:g}); "
        f"desired after {f['desired_reached_after_s']} s, ready after {took} s; hold "
        f"latency {pcts(lat)}, {f['throughput_during_hold_rps']} req/s")
    peak = max((s["ready"] for s in rep.samples if s["t"] >= step), default=0)
    return [Criterion(f"ready replicas reach {expected}", took is not None and took <= within,
                      took, within, f"ready replicas never reached {expected} (peak {peak})"
                      if took is None else f"ready replicas reached {expected} {took:.1f} s "
                      f"after the step (limit {within:g} s)")]


# -- scale_to_zero ---------------------------------------------------------------------

def zero_drive(run: Run) -> None:
    p = run.p
    load(run, [(p["load_users"], p["load_s"], f"load: {p['load_users']} users")], 0)
    p["last_answer_t"] = last = max((r[0] + r[1] / 1000.0 for r in run.report.records),
                                    default=None)
    run.event("silence (last answer)", at=last)
    run.set_users(0)
    # wait_until gives the send time of the poll that saw it (the change happened in the
    # 0.1 s before), so the API's own latency is not counted.
    p["zero_t"] = round(run.wait_until(
        lambda: run.status(run.function).get("readyReplicas", 0) == 0, run.zero_timeout(),
        f"{run.function} at 0 ready"), 3)
    run.event("zero ready replicas")
    run.sleep(1.0)  # let the 0.5 s sampler see (and the picture show) the zero
    (ok, ms, _), cold, _ = counted_cold(run.api, run.function,
                                        lambda: run.call("next request (cold)"))
    p["next_request"] = {"ok": ok, "ms": round(ms, 3), "cold": cold}
    run.event("next request answered")
    run.sleep(1.0)  # show the pod that request started


def zero_judge(run: Run) -> list[Criterion]:
    p, rep, s = run.p, run.report, run.scaling
    grace, window = float(s["scaleToZeroGracePeriodSeconds"]), float(s["stableWindowSeconds"])
    limit = round(window + grace + 2 * run.tick + POLL_INTERVAL, 3)
    last, zero, nxt = p.get("last_answer_t"), p.get("zero_t"), p.get("next_request")
    took = None if last is None or zero is None else round(zero - last, 3)
    how = {True: "as a cold start", False: "but NOT as a cold start (a pod was still "
           "serving)", None: "(cold start not checked: /metrics unreadable)"}
    nxt_ms = None if nxt is None else nxt["ms"]
    rep.figures.update({
        "zero_after_last_answer_s": took, "zero_limit_s": limit,
        "ready_peak": ready_peak(rep.samples), "next_request_ms": nxt_ms,
        "latency_during_load_ms": (lat := latency(run, "invoke")),
        "headline": f"load {pcts(lat)}, peak {ready_peak(rep.samples)} pods; zero {took} s "
                    f"after the last answer (limit {limit:g} s); next request "
                    f"{fmt_ms(nxt_ms)} ms",
        **({} if last is None else {"deadline": {"from": last, "to": last + limit,
                                                 "label": f"zero within {limit:g} s"}})})
    # Only a request seen as a cold start proves the function was at zero; an unreadable
    # /metrics proves nothing, so it fails too.
    return [at_most(f"zero within window + grace + 2 ticks ({limit:g} s)", took, limit, "s",
                    f"ready replicas reached 0 after the last answer (window {window:g} s + "
                    f"grace {grace:g} s + 2 x tick {run.tick:g} s + {POLL_INTERVAL:g} s "
                    "polling)"),
            Criterion("next request succeeds", bool(nxt and nxt["ok"] and nxt["cold"] is True),
                      nxt and nxt["ok"], True, "the next request was never made" if not nxt
                      else f"the next request {'succeeded' if nxt['ok'] else 'FAILED'} in "
                      f"{nxt['ms']:.0f} ms {how[nxt['cold']]}")]


# -- burst_at_zero ---------------------------------------------------------------------

def burst_drive(run: Run) -> None:
    users = run.p["burst_users"]
    run.set_users(users)
    run.sending = True
    for n in range(1, run.p["rounds"] + 1):
        run.wait_zero()
        run.answered = 0
        start = run.event(f"burst {n}: {users} requests at zero")
        run.open_gate()  # wakes every waiting user at once
        run.wait_until(lambda: run.answered >= users, run.request_timeout(),
                       f"{users} answers in burst {n}")
        mine = [r for r in run.report.records if r[3] == "burst" and r[0] >= start - 0.01]
        ends = sorted(r[0] + r[1] / 1000.0 - start for r in mine)
        run.p.setdefault("done", []).append({
            "round": n, "t": start, "requests": len(mine),
            "failures": sum(not r[2] for r in mine),
            "first_answer_s": round(ends[0], 3) if ends else None,
            "last_answer_s": round(ends[-1], 3) if ends else None,
            "latency_ms": summarize([float(r[1]) for r in mine])})
        run.event(f"burst {n}: all answered")
    run.sending = False  # back to zero, so the picture shows the last burst's whole cycle
    run.wait_zero()
    run.event("back at zero")
    run.sleep(0.6)


def burst_judge(run: Run) -> list[Criterion]:
    p, rep = run.p, run.report
    rounds, users = p.pop("done", []), p["burst_users"]
    worst = max((r["last_answer_s"] or 0 for r in rounds), default=None)
    rep.figures.update({
        "rounds": rounds, "latency_ms": (lat := latency(run, "burst")),
        "ready_peak": ready_peak(rep.samples),
        "headline": f"{users} requests at zero x {len(rounds)} rounds: "
                    f"{pcts(lat, ('p50', 'p95', 'max'))}; all answered within {worst} s "
                    f"(worst round); peak {ready_peak(rep.samples)} pods"})
    want, got = p["rounds"] * users, sum(r["requests"] for r in rounds)
    return [Criterion("every user answered", got == want, got, want, f"{got} of {want} burst "
                      f"requests were answered ({len(rounds)} of {p['rounds']} rounds)")]


# -- workflow_load ---------------------------------------------------------------------

WORKFLOW = "lt-workflow-load"


def retargeted(path: Path, old: str, new: str) -> Any:
    """A workflow file whose Tasks' Resource names start with ``new`` instead of ``old``."""
    return json.loads(path.read_text().replace(f'"Resource": "{old}', f'"Resource": "{new}'))


def succeeded(out: Any, wrong: Callable[[dict[str, Any]], str | None]) -> str | None:
    """Why an execution's answer is not a success (``wrong`` of its output), or None."""
    if not isinstance(out, dict):
        return f"execution {out}: "
    if out.get("status") != "SUCCEEDED":
        return f"execution {out.get('status')}: {out.get('error')}"
    return wrong(out.get("output") or {})


def workflow_check(run: Run, out: Any) -> str | None:
    n = int(run.sc.body["n"]) + 1
    return succeeded(out, lambda got: None if got == {"n": n, "results": [n + 1] * 3}
                     else f"wrong output {json.dumps(got)[:200]}")


def workflow_judge(run: Run) -> list[Criterion]:
    n, lat, f = executions(run)
    f["executions_per_s"] = round(n / run.p["hold_s"], 2)
    f["headline"] = (f"{n} executions of a 4-invocation workflow by {run.p['wf_users']} "
                     f"users: {pcts(lat)}, {f['executions_per_s']} executions/s")
    return [ran(run)]


# -- imagepipe_load --------------------------------------------------------------------

PIPE = FIXTURES / "imagepipe"  # four Pillow functions, a workflow, test images
STAGES = ("inspect", "thumbnail", "histogram", "classify")
PIPE_SPEC = {"scaling": {"minScale": 1, "maxScale": 4, "target": 1, "stableWindowSeconds": 6,
                         "scaleToZeroGracePeriodSeconds": 2}}  # one request per pod


def deploy_imagepipe(api: Any, prefix: str, workflow: str, spec: Any = None,
                     skip: str = "") -> list[str]:
    """The pipeline's functions as ``PREFIX-STAGE`` (but ``skip``, deployed already) and
    its workflow on them; every function's name (also :mod:`loadtests.bench`)."""
    names = [f"{prefix}-{s}" for s in STAGES]
    for name, stage in zip(names, STAGES, strict=True):
        if name != skip:
            api.deploy(name, PIPE / "functions" / stage, spec, wait=False)
    for name in names:
        api.wait_ready(name, timeout=600)
    api.deploy_workflow(workflow, retargeted(PIPE / "imagepipe.json", "img-", prefix + "-"))
    return names


def pipe_setup(run: Run) -> None:
    """The other three functions, the workflow on them, the images, one warm execution."""
    run.functions[:] = deploy_imagepipe(run.api, "lt-img", run.sc.workflow, PIPE_SPEC,
                                        skip=run.function)
    images = sorted((PIPE / "images").iterdir())
    run.bodies[:] = [json.dumps({"name": p.name, "size": p.stat().st_size, "contentBase64":
                                 base64.b64encode(p.read_bytes()).decode()}).encode()
                     for p in images]
    run.p["images"] = [p.name for p in images]
    warm = run.api.start_workflow(run.sc.workflow, data=run.bodies[0], timeout=300)
    if pipe_check(run, warm.json() if warm.ok else warm.text) is not None:
        raise ScenarioError(f"the warm-up execution failed: {warm.text[:300]}")


def pipe_check(run: Run, out: Any) -> str | None:
    return succeeded(out, lambda got: None if len(got.get("labels", [])) == 2
                     and got.get("files") else f"no labels or thumbnail in "
                     f"{json.dumps(got)[:200]}")


def pipe_judge(run: Run) -> list[Criterion]:
    n, lat, f = executions(run)
    peaks = {fn: max((int(r[1]) for r in rows), default=0)
             for fn, rows in f.get("replicas_by_function", {}).items()}
    f["peak_ready_by_function"] = peaks
    f["headline"] = (f"{n} pipeline executions at {run.p['pipe_steps']} users: {pcts(lat)}; "
                     "peak ready pods " + ", ".join(f"{fn.removeprefix('lt-img-')} {k}"
                                                    for fn, k in peaks.items()))
    top = max(peaks.values(), default=0)
    return [ran(run), Criterion("the pipeline scaled", top > 1, top, 2,
                                 f"peak ready pods of a function: {top} (more than 1 wanted)")]


def steps(raw: str) -> list[int]:
    """``--pipe-steps``: user counts like 1,2,4 (argparse says what is wrong)."""
    return [int(x) for x in raw.split(",")]


# -- the table ---------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "cold_start", "add.py", {"x": 1, "y": 2},
        {"scaling": {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6, "maxScale": 1}},
        {"trials": (10, 3)}, cold_drive, cold_judge, key_latency="cold start",
        options={"trials": (int, "cold start trials")}),
    Scenario(
        "scale_up", "sleep.py", {"ms": 200},
        {"scaling": {"minScale": 1, "maxScale": 6, "target": 2,
                     "targetUtilizationPercentage": 100, "stableWindowSeconds": 10,
                     "scaleToZeroGracePeriodSeconds": 5}},
        {"idle_s": (5.0, 3.0), "hold_s": (40.0, 15.0), "step_users": (6, 6),
         "within": (15.0, 15.0)}, step_drive, step_judge, start="floor",
        options={"step_users": (int, "users after the step (3 pods at target 2)"),
                 "within": (float, "ready replicas must reach the expected count this many "
                            "seconds after the step")}),
    Scenario(
        "scale_to_zero", "sleep.py", {"ms": 100},
        {"scaling": {"maxScale": 4, "target": 2, "targetUtilizationPercentage": 100,
                     "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 4}},
        {"load_s": (20.0, 8.0), "load_users": (4, 4)}, zero_drive, zero_judge, start="",
        options={"load_users": (int, "users during the load phase (2 pods at target 2)")}),
    Scenario(
        "burst_at_zero", "sleep.py", {"ms": 100},
        {"scaling": {"maxScale": 4, "stableWindowSeconds": 6,
                     "scaleToZeroGracePeriodSeconds": 2}},
        {"rounds": (3, 1), "burst_users": (100, 100)}, burst_drive, burst_judge, users="gate",
        request_name="burst", key_latency="burst", requests="burst requests",
        options={"rounds": (int, "bursts, each from zero"),
                 "burst_users": (int, "users in a burst, one request each")}),
    Scenario(
        "workflow_load", "workflows/functions/inc.py", {"n": 1},
        {"scaling": {"minScale": 1, "maxScale": 4, "target": 2, "stableWindowSeconds": 10,
                     "scaleToZeroGracePeriodSeconds": 5}},
        {"hold_s": (20.0, 8.0), "wf_users": (4, 4)},
        lambda run: load(run, [(run.p["wf_users"], run.p["hold_s"],
                                f"{run.p['wf_users']} users run {WORKFLOW}")], 0),
        workflow_judge, start="", request_name="workflow", workflow=WORKFLOW, requests="executions",
        check=workflow_check, options={"wf_users": (int, "users running the workflow")},
        setup=lambda run: run.api.deploy_workflow(WORKFLOW, retargeted(
            FIXTURES / "workflows" / "fan-out.json", "inc", run.function))),
    Scenario(
        "imagepipe_load", "imagepipe/functions/thumbnail", {}, PIPE_SPEC,
        {"pipe_steps": ([1, 2, 4, 8], [1, 4]), "hold_s": (10.0, 6.0)},
        lambda run: load(run, [(n, run.p["hold_s"], f"{n} user{'s' if n > 1 else ''}")
                               for n in run.p["pipe_steps"]]),
        pipe_judge, start="floor", request_name="execution", function="lt-img-thumbnail",
        requests="executions",
        workflow="lt-imagepipe", check=pipe_check, setup=pipe_setup,
        slow=True,  # builds Pillow: ~1 min
        options={"pipe_steps": (steps, "user counts, one step each")}),
)}
