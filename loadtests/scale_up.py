"""Scale-up: a step in load (idle, then a jump in users, held) and the pods that follow.

    locust -f loadtests/scale_up.py --headless --host http://127.0.0.1:8080 [--short]

Fixture ``sleep.py`` answering ``{"ms": 200}``, with ``minScale`` 1 (the step starts
from one warm pod, so this measures scaling up, not a cold start), ``maxScale`` 6,
``target`` 2 at 100 % utilization and a 10 s stable window. The step is the shape:

    idle (0 users, 5 s; 3 s short) -> 6 users, all at once, held 40 s (15 s short)

Each user calls back to back, so about 6 requests are in flight the whole hold and the
KPA's expected count is ceil(6 / (2 x 100 / 100)) = 3 pods (the report states the
formula with the function's actual scaling; ``--step-users`` changes the step).

Criteria: the ready replicas reach the expected count within ``--within`` seconds of
the step (default 15: one tick to decide, a few hundred ms per pod to start, and
margin for a shared 2-core machine), and no request fails. The report also has the
time until the autoscaler *wanted* that count, the peak and the final count.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import events

from loadtests.common import FIXTURES, Scenario, ScenarioShape, ScenarioUser
from loadtests.report import (
    EXPECTED_FORMULA,
    Criterion,
    expected_replicas,
    first_time,
    fmt_ms,
    no_failures,
    per_pod_target,
    reaches_within,
    summarize,
)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--step-users", type=int, default=6,
                        help="users after the step (default 6: 3 pods at target 2)")
    parser.add_argument("--within", type=float, default=15.0, metavar="S",
                        help="ready replicas must reach the expected count this many "
                             "seconds after the step (default 15)")


class ScaleUp(Scenario):
    name = "scale_up"
    fixture = FIXTURES / "sleep.py"
    body = {"ms": 200}
    spec = {"scaling": {"minScale": 1, "maxScale": 6, "target": 2,
                        "targetUtilizationPercentage": 100, "stableWindowSeconds": 10,
                        "scaleToZeroGracePeriodSeconds": 5}}

    def parameters(self, short: bool) -> dict[str, Any]:
        return {
            "idle_s": 3.0 if short else 5.0,
            "hold_s": 15.0 if short else 40.0,
            "users": int(getattr(self.opts, "step_users", 6) or 6),
            "within_s": float(getattr(self.opts, "within", 15.0) or 15.0),
        }

    def prepare(self) -> None:
        # Start from the state the step should find: the pods minScale asks for, ready.
        floor = int(self.scaling.get("minScale", 0))
        self.wait_until(lambda: self.status().get("readyReplicas", 0) == floor
                        and self.status().get("desiredReplicas", 0) == floor,
                        self.zero_timeout(), f"{self.function} at {floor} ready replicas")

    def run(self) -> None:
        p = self.p
        self.event(f"idle ({p['idle_s']:g} s)")
        gevent.sleep(p["idle_s"])
        self.set_users(p["users"])
        self.sending = True
        p["step_t"] = self.event(f"step to {p['users']} users")
        gevent.sleep(p["hold_s"])
        self.sending = False
        self.event("load stops")
        gevent.sleep(0.5)

    def evaluate(self) -> list[Criterion]:
        rep, p = self.report, self.p
        step = p.get("step_t")
        if step is None:
            return [Criterion("step happened", False, None, None, "the step never happened")]
        expected = expected_replicas(p["users"], self.scaling)
        end = step + p["hold_s"]
        hold = [s for s in rep.samples if step <= s["t"] <= end]
        reach = reaches_within(rep.samples, expected, step, p["within_s"])
        wanted = first_time(rep.samples, "desired", lambda v: v >= expected, after=step)
        inside = [r for r in rep.records if step <= r[0] < end]
        conc = [s["stable"] for s in hold[-4:] if s.get("stable") is not None]
        rep.figures.update({
            "expected_replicas": expected,
            "expected_formula": EXPECTED_FORMULA,
            "expected_inputs": {"concurrency": p["users"],
                                "per_pod": per_pod_target(self.scaling)},
            "desired_reached_after_s": None if wanted is None else round(wanted - step, 3),
            "ready_reached_after_s": reach.measured,
            "ready_peak": max((s["ready"] for s in hold), default=None),
            "ready_at_end": hold[-1]["ready"] if hold else None,
            "autoscaler_stable_concurrency_at_end": round(conc[-1], 3) if conc else None,
            "latency_during_hold_ms": summarize([float(r[1]) for r in inside]),
            "throughput_during_hold_rps": round(len(inside) / p["hold_s"], 2),
            "deadline": {"from": step, "to": step + p["within_s"],
                         "label": f"{expected} ready within {p['within_s']:g} s"},
        })
        f = rep.figures
        lat = f["latency_during_hold_ms"]
        f["headline"] = (
            f"step to {p['users']} users: expected {expected} pods = ceil({p['users']} / "
            f"{per_pod_target(self.scaling):g}); desired after "
            f"{f['desired_reached_after_s']} s, ready after {f['ready_reached_after_s']} s; "
            f"hold latency p50 {fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, "
            f"{f['throughput_during_hold_rps']} req/s")
        return [reach, no_failures(rep.records)]


SCENARIO = ScaleUp()


class Shape(ScenarioShape):
    scenario = SCENARIO


class StepUser(ScenarioUser):
    scenario = SCENARIO
