"""The load-test scenarios as data: fixture, spec, parameters, a driver, criteria.

A :class:`Scenario` is plain data plus small functions of the run (``Run``: the locust
adapter's ``Runner``, :mod:`loadtests.locustfile`): ``drive`` sets user counts, opens
and closes the tap (``run.sending``) and marks events; ``judge`` fills the report's
figures and returns the criteria. Nothing here imports locust or gevent. Options go to
locust after ``--``; the why of each limit is beside its code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loadtests.report import (
    EXPECTED_FORMULA,
    Criterion,
    at_most,
    expected_replicas,
    first_time,
    fmt_ms,
    no_failures,
    per_pod_target,
    reaches_within,
    summarize,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
POLL_INTERVAL = 0.1  # s between the driver's reads while it waits for a state
COLD_METRIC = "allinone_cold_start_latency_seconds"
Run = Any  # loadtests.locustfile.Runner (locust's types are not strict-clean)
T = TypeVar("T")
Option = tuple[str, Callable[[str], Any], Any, str]  # flag, type, default, help


class ScenarioError(Exception):
    """The scenario cannot go on (set-up failed, a state was never reached)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    fixture: str  # a file in fixtures/
    body: dict[str, Any]
    spec: dict[str, Any]
    params: Callable[[Run, bool], dict[str, Any]]
    drive: Callable[[Run], None]
    judge: Callable[[Run], list[Criterion]]
    start: str = "zero"  # the state set-up waits for: "zero", "floor" (minScale ready), ""
    users: str = "loop"  # "loop": back to back while sending; "gate": one per opened gate
    request_name: str = "invoke"
    options: tuple[Option, ...] = ()
    key_latency: str = ""  # the request name the --max-p50/p95-ms thresholds check
    path: str = "/function/{function}"  # what the users call
    function: str = ""  # the deployed name (default lt-NAME)
    slow: bool = False  # left out of --short's default list (CI); run when named
    setup: Callable[[Run], None] | None = None  # after the deploy (a workflow) ...
    teardown: Callable[[Run], None] | None = None  # ... and its removal
    check: Callable[[Run, Any], str | None] | None = None  # why a 200's body is wrong


def latencies(run: Run, name: str | None = None, after: float = float("-inf"),
              before: float = float("inf")) -> list[float]:
    return [float(r[1]) for r in run.report.records
            if name in (None, r[3]) and after <= r[0] < before]


def hold(run: Run, users: int, seconds: float, label: str) -> float:
    """A phase: ``users`` callers back to back for ``seconds``; when it started."""
    run.set_users(users)
    run.sending = True
    start: float = run.event(label)
    run.sleep(seconds)
    run.sending = False
    return start


def ran(rep: Any, what: str = "executions") -> list[Criterion]:
    n = len(rep.records)
    return [Criterion(f"{what} ran", bool(n), n, 1, f"{n} {what} ran (at least 1 wanted)"),
            no_failures(rep.records, what)]


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
            "cold_ms": round(cold_ms, 3), "warm_ms": round(warm_ms, 3),
            "pod_wait_ms": round(cold_ms - warm_ms, 3), "server_ms": server_ms})
    run.sleep(1.0)  # so that the replicas of the last trial are in the picture


def cold_judge(run: Run) -> list[Criterion]:
    tr = run.p.pop("rows", [])
    f = run.report.figures
    f.update({"trials": tr, **{k: summarize([t[col] for t in tr if t[col] is not None])
                              for k, col in (("cold_ms", "cold_ms"), ("warm_call_ms", "warm_ms"),
                                             ("pod_wait_ms", "pod_wait_ms"),
                                             ("server_cold_ms", "server_ms"))},
              "split": "call = warm request right after; pod wait = cold - warm; server = "
                       "activator latency of the cold request (/metrics histogram sum)"})
    f["headline"] = (
        f"cold start over {len(tr)} trials: p50 {fmt_ms(f['cold_ms']['p50'])} ms, "
        f"p95 {fmt_ms(f['cold_ms']['p95'])} ms, max {fmt_ms(f['cold_ms']['max'])} ms; "
        f"p50 split: pod wait {fmt_ms(f['pod_wait_ms']['p50'])} ms + call "
        f"{fmt_ms(f['warm_call_ms']['p50'])} ms; activator-side "
        f"{fmt_ms(f['server_cold_ms']['p50'])} ms")
    not_cold = [t["trial"] for t in tr if t["cold"] is not True]
    out = [no_failures(run.report.records),
           Criterion("every trial was cold", not not_cold, len(tr) - len(not_cold), len(tr),
                     "each trial's request was counted as a cold start" if not not_cold else
                     f"trials {not_cold} were not counted as cold starts (a pod was still "
                     "up, or /metrics unreadable)")]
    if len(tr) < run.p["trials"]:
        out.append(Criterion("all trials ran", False, len(tr), run.p["trials"],
                             f"only {len(tr)} of {run.p['trials']} trials ran"))
    return out


# -- scale_up --------------------------------------------------------------------------

def step_drive(run: Run) -> None:
    p = run.p
    run.event(f"idle ({p['idle_s']:g} s)")
    run.sleep(p["idle_s"])
    p["step_t"] = hold(run, p["users"], p["hold_s"], f"step to {p['users']} users")
    run.event("load stops")
    run.sleep(0.5)


def step_judge(run: Run) -> list[Criterion]:
    p, rep = run.p, run.report
    step = p.get("step_t")
    if step is None:
        return [Criterion("step happened", False, None, None, "the step never happened")]
    expected, per_pod = expected_replicas(p["users"], run.scaling), per_pod_target(run.scaling)
    end = step + p["hold_s"]
    held = [s for s in rep.samples if step <= s["t"] <= end]
    reach = reaches_within(rep.samples, expected, step, p["within_s"])
    wanted = first_time(rep.samples, "desired", lambda v: v >= expected, after=step)
    inside = latencies(run, after=step, before=end)
    conc = [s["stable"] for s in held[-4:] if s.get("stable") is not None]
    f = rep.figures
    f.update({
        "expected_replicas": expected, "expected_formula": EXPECTED_FORMULA,
        "expected_inputs": {"concurrency": p["users"], "per_pod": per_pod},
        "desired_reached_after_s": None if wanted is None else round(wanted - step, 3),
        "ready_reached_after_s": reach.measured,
        "ready_peak": max((s["ready"] for s in held), default=None),
        "ready_at_end": held[-1]["ready"] if held else None,
        "autoscaler_stable_concurrency_at_end": round(conc[-1], 3) if conc else None,
        "latency_during_hold_ms": (lat := summarize(inside)),
        "throughput_during_hold_rps": round(len(inside) / p["hold_s"], 2),
        "deadline": {"from": step, "to": step + p["within_s"],
                     "label": f"{expected} ready within {p['within_s']:g} s"}})
    f["headline"] = (
        f"step to {p['users']} users: expected {expected} pods = ceil({p['users']} / "
        f"{per_pod:g}); desired after {f['desired_reached_after_s']} s, ready after "
        f"{f['ready_reached_after_s']} s; hold latency p50 {fmt_ms(lat['p50'])} ms, p95 "
        f"{fmt_ms(lat['p95'])} ms, {f['throughput_during_hold_rps']} req/s")
    return [reach, no_failures(rep.records)]


# -- scale_to_zero ---------------------------------------------------------------------

def zero_drive(run: Run) -> None:
    p = run.p
    hold(run, p["users"], p["load_s"], f"load: {p['users']} users")
    run.wait_until(lambda: run.in_flight == 0, run.request_timeout(), "the users' last requests")
    p["last_answer_t"] = last = run.last_answer()
    run.event("silence (last answer)", at=last)
    run.set_users(0)
    # wait_until gives the send time of the poll that saw it (the change happened in the
    # 0.1 s before), so the API's own latency is not counted.
    p["zero_t"] = round(run.wait_until(lambda: run.status().get("readyReplicas", 0) == 0,
                                       run.zero_timeout(), f"{run.function} at 0 ready"), 3)
    run.event("zero ready replicas")
    run.sleep(1.0)  # let the 0.5 s sampler see (and the picture show) the zero
    (ok, ms, _), cold, _ = counted_cold(run.api, run.function,
                                        lambda: run.call("next request (cold)"))
    p["next_request"] = {"ok": ok, "ms": round(ms, 3), "cold": cold}
    run.event("next request answered")
    run.sleep(1.0)  # show the pod that request started


def zero_judge(run: Run) -> list[Criterion]:
    p, rep = run.p, run.report
    grace = float(run.scaling["scaleToZeroGracePeriodSeconds"])
    window = float(run.scaling["stableWindowSeconds"])
    limit = round(window + grace + 2 * run.tick + POLL_INTERVAL, 3)
    last, zero, nxt = p.get("last_answer_t"), p.get("zero_t"), p.get("next_request")
    took = None if last is None or zero is None else round(zero - last, 3)
    out = [no_failures(rep.records),
           at_most(f"zero within window + grace + 2 ticks ({limit:g} s)", took, limit, "s",
                   f"ready replicas reached 0 after the last answer (window {window:g} s + "
                   f"grace {grace:g} s + 2 x tick {run.tick:g} s + {POLL_INTERVAL:g} s polling)")]
    if nxt is None:
        out.append(Criterion("next request succeeds", False, None, True,
                             "the next request was never made"))
    else:
        how = {True: "as a cold start", False: "but NOT as a cold start (a pod was still "
               "serving)", None: "(cold start not checked: /metrics unreadable)"}
        # Only a request seen as a cold start proves the function was at zero; an
        # unreadable /metrics proves nothing, so it fails too.
        out.append(Criterion("next request succeeds", bool(nxt["ok"]) and nxt["cold"] is True,
                             nxt["ok"], True, f"the next request "
                             f"{'succeeded' if nxt['ok'] else 'FAILED'} in {nxt['ms']:.0f} ms "
                             f"{how[nxt['cold']]}"))
    f = rep.figures
    f.update({"zero_after_last_answer_s": took, "zero_limit_s": limit,
              "ready_peak": max((s["ready"] for s in rep.samples), default=None),
              "latency_during_load_ms": (lat := summarize(latencies(run, "invoke"))),
              "next_request_ms": None if nxt is None else nxt["ms"]})
    f["headline"] = (
        f"load p50 {fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, peak "
        f"{f['ready_peak']} pods; zero {took} s after the last answer (limit {limit:g} s); "
        f"next request {fmt_ms(f['next_request_ms'])} ms")
    if last is not None:
        f["deadline"] = {"from": last, "to": last + limit, "label": f"zero within {limit:g} s"}
    return out


# -- burst_at_zero ---------------------------------------------------------------------

def burst_drive(run: Run) -> None:
    p = run.p
    run.set_users(p["users"])
    run.sending = True
    for n in range(1, p["rounds"] + 1):
        run.wait_zero()
        run.answered = 0
        start = run.event(f"burst {n}: {p['users']} requests at zero")
        run.open_gate()  # wakes every waiting user at once
        run.wait_until(lambda: run.answered >= p["users"], run.request_timeout(),
                       f"{p['users']} answers in burst {n}")
        mine = [r for r in run.report.records if r[3] == "burst" and r[0] >= start - 0.01]
        ends = sorted(r[0] + r[1] / 1000.0 - start for r in mine)
        p.setdefault("done", []).append({
            "round": n, "t": start, "requests": len(mine),
            "failures": sum(1 for r in mine if not r[2]),
            "first_answer_s": round(ends[0], 3) if ends else None,
            "last_answer_s": round(ends[-1], 3) if ends else None,
            "latency_ms": summarize([float(r[1]) for r in mine])})
        run.event(f"burst {n}: all answered")
    run.sending = False  # back to zero, so the picture shows the last burst's whole cycle
    run.wait_zero()
    run.event("back at zero")
    run.sleep(0.6)


def burst_judge(run: Run) -> list[Criterion]:
    p, rep, f = run.p, run.report, run.report.figures
    rounds = p.pop("done", [])
    f.update({"rounds": rounds, "latency_ms": (lat := summarize(latencies(run, "burst"))),
              "ready_peak": max((s["ready"] for s in rep.samples), default=None)})
    worst = max((r["last_answer_s"] or 0 for r in rounds), default=None)
    f["headline"] = (
        f"{p['users']} requests at zero x {len(rounds)} rounds: p50 {fmt_ms(lat['p50'])} ms, "
        f"p95 {fmt_ms(lat['p95'])} ms, max {fmt_ms(lat['max'])} ms; all answered within "
        f"{worst} s (worst round); peak {f['ready_peak']} pods")
    want, got = p["rounds"] * p["users"], sum(r["requests"] for r in rounds)
    return [no_failures(rep.records, "burst requests"),
            Criterion("every user answered", got == want, got, want, f"{got} of {want} burst "
                      f"requests were answered ({len(rounds)} of {p['rounds']} rounds)")]


# -- workflow_load ---------------------------------------------------------------------

WORKFLOW = "lt-workflow-load"


def workflow_definition(function: str) -> dict[str, Any]:
    task = {"Type": "Task", "Resource": function}
    return {"StartAt": "first", "TimeoutSeconds": 120, "States": {
        "first": {**task, "Next": "positive", "ResultSelector": {
            "n.$": "$.n", "items.$": "States.Array($.n, $.n, $.n)"}},
        "positive": {"Type": "Choice", "Choices": [
            {"Variable": "$.n", "NumericGreaterThan": 0, "Next": "fan"}], "Default": "no"},
        "fan": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                "ItemSelector": {"n.$": "$$.Map.Item.Value"},
                "ItemProcessor": {"StartAt": "each", "States": {
                    "each": {**task, "OutputPath": "$.n", "End": True}}},
                "ResultPath": "$.results", "Next": "shape"},
        "shape": {"Type": "Pass", "Parameters": {"n.$": "$.n", "results.$": "$.results"},
                  "Next": "done"},
        "done": {"Type": "Succeed"},
        "no": {"Type": "Fail", "Error": "NotPositive"}}}


def succeeded(out: Any) -> str | None:
    """Why an execution's answer is not a success, or None."""
    if isinstance(out, dict) and out.get("status") == "SUCCEEDED":
        return None
    if not isinstance(out, dict):
        return f"execution {out}: "
    return f"execution {out.get('status')}: {out.get('error')}"


def workflow_check(run: Run, out: Any) -> str | None:
    n = int(run.sc.body["n"]) + 1
    if (why := succeeded(out)) is not None:
        return why
    if out.get("output") != {"n": n, "results": [n + 1] * 3}:
        return f"wrong output {json.dumps(out.get('output'))[:200]}"
    return None


def workflow_drive(run: Run) -> None:
    p = run.p
    p["start_t"] = hold(run, p["users"], p["hold_s"], f"{p['users']} users run {WORKFLOW}")
    run.event("load stops")
    run.wait_until(lambda: run.in_flight == 0, 60, "the last executions")


def workflow_judge(run: Run) -> list[Criterion]:
    p, rep = run.p, run.report
    n, lat = len(rep.records), summarize(latencies(run))
    rep.figures.update({"executions": n, "execution_latency_ms": lat,
                        "executions_per_s": round(n / p["hold_s"], 2)})
    rep.figures["headline"] = (
        f"{n} executions of a 4-invocation workflow by {p['users']} users: p50 "
        f"{fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, "
        f"{rep.figures['executions_per_s']} executions/s")
    return ran(rep)


# -- imagepipe_load --------------------------------------------------------------------

PIPE = FIXTURES / "imagepipe"  # four Pillow functions, a workflow, test images
STAGES = ("inspect", "thumbnail", "histogram", "classify")
PIPE_WORKFLOW = "lt-imagepipe"
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
    text = (PIPE / "imagepipe.json").read_text()
    api.deploy_workflow(workflow, json.loads(text.replace('"Resource": "img-',
                                                          f'"Resource": "{prefix}-')))
    return names


def pipe_setup(run: Run) -> None:
    """The other three functions, the workflow on them, the images, one warm execution."""
    run.functions[:] = deploy_imagepipe(run.api, "lt-img", PIPE_WORKFLOW, PIPE_SPEC,
                                        skip=run.function)
    images = sorted((PIPE / "images").iterdir())
    run.bodies[:] = [json.dumps({"name": p.name, "size": p.stat().st_size, "contentBase64":
                                 base64.b64encode(p.read_bytes()).decode()}).encode()
                     for p in images]
    run.p["images"] = [p.name for p in images]
    warm = run.api.start_workflow(PIPE_WORKFLOW, data=run.bodies[0], timeout=300)
    if pipe_check(run, warm.json() if warm.ok else warm.text) is not None:
        raise ScenarioError(f"the warm-up execution failed: {warm.text[:300]}")


def pipe_teardown(run: Run) -> None:
    run.api.delete_workflow(PIPE_WORKFLOW, missing_ok=True)
    for fn in run.functions:
        run.api.delete(fn, missing_ok=True)


def pipe_check(run: Run, out: Any) -> str | None:
    if (why := succeeded(out)) is not None:
        return why
    result = out.get("output") or {}
    if len(result.get("labels", [])) != 2 or not result.get("files"):
        return f"no labels or thumbnail in {json.dumps(result)[:200]}"
    return None


def pipe_drive(run: Run) -> None:
    for users in run.p["steps"]:
        hold(run, users, run.p["hold_s"], f"{users} user{'s' if users > 1 else ''}")
    run.event("load stops")
    run.wait_until(lambda: run.in_flight == 0, 120, "the last executions")
    run.sleep(1.0)


def pipe_judge(run: Run) -> list[Criterion]:
    rep = run.report
    lat = summarize(latencies(run))
    by_fn = rep.figures.get("replicas_by_function", {})
    peaks = {fn: max((int(r[1]) for r in rows), default=0) for fn, rows in by_fn.items()}
    rep.figures.update({"executions": len(rep.records), "execution_latency_ms": lat,
                        "peak_ready_by_function": peaks})
    rep.figures["headline"] = (
        f"{len(rep.records)} pipeline executions at {run.p['steps']} users: p50 "
        f"{fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms; peak ready pods "
        + ", ".join(f"{fn.removeprefix('lt-img-')} {n}" for fn, n in peaks.items()))
    top = max(peaks.values(), default=0)
    return [*ran(rep), Criterion("the pipeline scaled", top > 1, top, 2,
                                 f"peak ready pods of a function: {top} (more than 1 wanted)")]


def steps(raw: str) -> list[int]:
    """``--pipe-steps``: user counts like 1,2,4 (argparse says what is wrong)."""
    return [int(x) for x in raw.split(",")]


# -- the table ---------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "cold_start", "add.py", {"x": 1, "y": 2},
        {"scaling": {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6, "maxScale": 1}},
        params=lambda run, short: {"trials": run.opt("trials") or (3 if short else 10)},
        drive=cold_drive, judge=cold_judge, key_latency="cold start",
        options=(("--trials", int, 0, "cold start trials (default 10, 3 with --short)"),)),
    Scenario(
        "scale_up", "sleep.py", {"ms": 200},
        {"scaling": {"minScale": 1, "maxScale": 6, "target": 2,
                     "targetUtilizationPercentage": 100, "stableWindowSeconds": 10,
                     "scaleToZeroGracePeriodSeconds": 5}},
        params=lambda run, short: {"idle_s": 3.0 if short else 5.0,
                                   "hold_s": 15.0 if short else 40.0,
                                   "users": run.opt("step_users"),
                                   "within_s": run.opt("within")},
        drive=step_drive, judge=step_judge, start="floor",
        options=(("--step-users", int, 6, "users after the step (default 6: 3 pods at "
                  "target 2)"),
                 ("--within", float, 15.0, "ready replicas must reach the expected count "
                  "this many seconds after the step (default 15)"))),
    Scenario(
        "scale_to_zero", "sleep.py", {"ms": 100},
        {"scaling": {"maxScale": 4, "target": 2, "targetUtilizationPercentage": 100,
                     "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 4}},
        params=lambda run, short: {"load_s": 8.0 if short else 20.0,
                                   "users": run.opt("load_users")},
        drive=zero_drive, judge=zero_judge, start="",
        options=(("--load-users", int, 4, "users during the load phase (default 4: 2 pods "
                  "at target 2)"),)),
    Scenario(
        "burst_at_zero", "sleep.py", {"ms": 100},
        {"scaling": {"maxScale": 4, "stableWindowSeconds": 6,
                     "scaleToZeroGracePeriodSeconds": 2}},
        params=lambda run, short: {"rounds": run.opt("rounds") or (1 if short else 3),
                                   "users": run.opt("burst_users")},
        drive=burst_drive, judge=burst_judge, users="gate", request_name="burst",
        key_latency="burst",
        options=(("--rounds", int, 0, "bursts, each from zero (default 3, 1 with --short)"),
                 ("--burst-users", int, 100, "users in a burst, one request each (default "
                  "100)"))),
    Scenario(
        "workflow_load", "workflows/functions/inc.py", {"n": 1},
        {"scaling": {"minScale": 1, "maxScale": 4, "target": 2, "stableWindowSeconds": 10,
                     "scaleToZeroGracePeriodSeconds": 5}},
        params=lambda run, short: {"hold_s": 8.0 if short else 20.0,
                                   "users": run.opt("wf_users"), "workflow": WORKFLOW},
        drive=workflow_drive, judge=workflow_judge, start="", request_name="workflow",
        path=f"/workflow/{WORKFLOW}", check=workflow_check,
        setup=lambda run: run.api.deploy_workflow(WORKFLOW, workflow_definition(run.function)),
        teardown=lambda run: run.api.delete_workflow(WORKFLOW, missing_ok=True),
        options=(("--wf-users", int, 4, "users running the workflow (default 4)"),)),
    Scenario(
        "imagepipe_load", "imagepipe/functions/thumbnail", {}, PIPE_SPEC,
        params=lambda run, short: {"steps": run.opt("pipe_steps")
                                   or ([1, 4] if short else [1, 2, 4, 8]),
                                   "hold_s": 6.0 if short else 10.0,
                                   "workflow": PIPE_WORKFLOW},
        drive=pipe_drive, judge=pipe_judge, start="floor", request_name="execution",
        function="lt-img-thumbnail", path=f"/workflow/{PIPE_WORKFLOW}", check=pipe_check,
        setup=pipe_setup, teardown=pipe_teardown, slow=True,  # builds Pillow: ~1 min
        options=(("--pipe-steps", steps, None, "user counts, one step each (default 1,2,4,8; "
                  "short 1,4)"),)),
)}
