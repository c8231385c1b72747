"""Burst at zero: 100 users fire one request each, at once, at a function with no pod.

    locust -f loadtests/burst_at_zero.py --headless --host http://127.0.0.1:8080 [--short]

Fixture ``sleep.py`` answering ``{"ms": 100}`` with the default target (10 at 70 %,
so 100 held requests ask for ceil(100 / 7) = 15 pods), capped at ``maxScale`` 4 to
spare the 2-core machine, a 2 s grace period and a 6 s stable window.

All 100 users are spawned first and wait on a gate. A round: wait until the function
is at zero (no ready or desired replica, no Pod object left), open the gate, and every
user sends one request (``burst``). The activator holds them in its queue while the
autoscaler starts pods, then serves them all. 3 rounds (1 with ``--short``;
``--rounds`` overrides); ``--burst-users`` changes the 100. After the last round the
scenario waits for zero once more, so the report shows every burst's whole cycle.

Criterion: every request succeeds, and every user got an answer in every round.
The report has, per round, the time to the first and the last answer and the latency
distribution, and the ready replicas over time. Optional ``--max-p50-ms`` /
``--max-p95-ms`` apply to the burst latencies (off by default).
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
from locust import events

from loadtests.common import FIXTURES, Scenario, ScenarioShape, ScenarioUser
from loadtests.report import Criterion, fmt_ms, no_failures, summarize

NAME = "burst"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--rounds", type=int, default=0,
                        help="bursts, each from zero (default 3, 1 with --short)")
    parser.add_argument("--burst-users", type=int, default=100,
                        help="users in a burst, one request each (default 100)")


class BurstAtZero(Scenario):
    name = "burst_at_zero"
    fixture = FIXTURES / "sleep.py"
    body = {"ms": 100}
    spec = {"scaling": {"maxScale": 4, "stableWindowSeconds": 6,
                        "scaleToZeroGracePeriodSeconds": 2}}

    def __init__(self) -> None:
        super().__init__()
        self.round = 0
        self.gate = gevent.event.Event()
        self.answered = 0
        self.rounds: list[dict[str, Any]] = []

    def parameters(self, short: bool) -> dict[str, Any]:
        rounds = int(getattr(self.opts, "rounds", 0) or 0) or (1 if short else 3)
        return {"rounds": rounds, "users": int(getattr(self.opts, "burst_users", 100) or 100)}

    def prepare(self) -> None:
        self.wait_zero()

    def run(self) -> None:
        p = self.p
        self.set_users(p["users"])
        self.sending = True
        for n in range(1, p["rounds"] + 1):
            self.wait_zero()
            self.answered = 0
            self.round = n
            start = self.event(f"burst {n}: {p['users']} requests at zero")
            self.gate.set()  # wakes every waiting user at once
            self.gate = gevent.event.Event()
            self.wait_until(lambda: self.answered >= p["users"], self.request_timeout,
                            f"{p['users']} answers in burst {n}")
            mine = [r for r in self.report.records if r[3] == NAME and r[0] >= start - 0.01]
            ends = sorted(r[0] + r[1] / 1000.0 - start for r in mine)
            self.rounds.append({
                "round": n, "t": start, "requests": len(mine),
                "failures": sum(1 for r in mine if not r[2]),
                "first_answer_s": round(ends[0], 3) if ends else None,
                "last_answer_s": round(ends[-1], 3) if ends else None,
                "latency_ms": summarize([float(r[1]) for r in mine]),
            })
            self.event(f"burst {n}: all answered")
        # Back to zero, so the picture shows the whole cycle of the last burst too.
        self.sending = False
        self.wait_zero()
        self.event("back at zero")
        gevent.sleep(0.6)

    def key_latencies(self) -> tuple[str, list[float]]:
        return "burst latency", [float(r[1]) for r in self.report.records if r[3] == NAME]

    def evaluate(self) -> list[Criterion]:
        rep, p = self.report, self.p
        rep.figures.update({
            "rounds": self.rounds,
            "latency_ms": summarize(self.key_latencies()[1]),
            "ready_peak": max((s["ready"] for s in rep.samples), default=None),
        })
        lat = rep.figures["latency_ms"]
        worst = max((r["last_answer_s"] or 0 for r in self.rounds), default=None)
        rep.figures["headline"] = (
            f"{p['users']} requests at zero x {len(self.rounds)} rounds: p50 "
            f"{fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, max {fmt_ms(lat['max'])} "
            f"ms; all answered within {worst} s (worst round); peak "
            f"{rep.figures['ready_peak']} pods")
        out = [no_failures(rep.records, "burst requests")]
        want = p["rounds"] * p["users"]
        got = sum(r["requests"] for r in self.rounds)
        out.append(Criterion("every user answered", got == want, got, want,
                             f"{got} of {want} burst requests were answered "
                             f"({len(self.rounds)} of {p['rounds']} rounds)"))
        return out


SCENARIO = BurstAtZero()


class Shape(ScenarioShape):
    scenario = SCENARIO


class BurstUser(ScenarioUser):
    """Waits at the gate; one request per round."""

    scenario = SCENARIO
    request_name = NAME
    round_seen = 0

    def work(self) -> None:
        sc = SCENARIO
        if sc.round <= self.round_seen:
            sc.gate.wait(timeout=0.5)
            return
        self.round_seen = sc.round
        try:
            sc.invoke(self.client, NAME)
        finally:
            sc.answered += 1
