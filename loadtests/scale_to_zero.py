"""Scale to zero: load, then silence, then one more request.

    locust -f loadtests/scale_to_zero.py --headless --host http://127.0.0.1:8080 [--short]

Fixture ``sleep.py`` answering ``{"ms": 100}``, ``target`` 2 at 100 %, ``maxScale`` 4,
a 6 s stable window and a 4 s scale-to-zero grace period. Phases:

1. load: 4 users back to back for 20 s (8 s short): about 4 in flight, 2 pods;
2. silence: the users stop; the driver polls the function every 0.1 s until it has
   no ready replica;
3. 1 s later (so that the 0.5 s sampler records the zero), the next request, from the
   driver: it must succeed, and it is a cold start (the activator's
   ``allinone_cold_starts`` counter for the function goes up by one).

Criteria: no request fails; ready replicas reach 0 no later than the grace period plus
two autoscaler ticks after the last request was answered (``--tick``: the server's
tick, 2 s by default; the 0.1 s polling resolution is added to the limit); the next
request succeeds as a cold start.

Why two ticks: the first tick at least ``grace`` after the last request comes up to one
tick later, and the KPA scales down at most by half per tick (Knative's
``maxScaleDownRate`` 2), so 2 pods go 2 -> 1 -> 0 over two ticks. With these numbers
the stable window has usually brought the function to 1 pod during the grace period
(4 in flight for the last 2 s of a 6 s window: ceil(1.33 / 2) = 1), so zero comes at
the first tick after the grace period.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust import events

from loadtests.common import (
    FIXTURES,
    POLL_INTERVAL,
    Scenario,
    ScenarioError,
    ScenarioShape,
    ScenarioUser,
)
from loadtests.report import Criterion, at_most, fmt_ms, no_failures, summarize


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--load-users", type=int, default=4,
                        help="users during the load phase (default 4: 2 pods at target 2)")


class ScaleToZero(Scenario):
    name = "scale_to_zero"
    fixture = FIXTURES / "sleep.py"
    body = {"ms": 100}
    spec = {"scaling": {"maxScale": 4, "target": 2, "targetUtilizationPercentage": 100,
                        "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 4}}

    def parameters(self, short: bool) -> dict[str, Any]:
        return {"load_s": 8.0 if short else 20.0,
                "users": int(getattr(self.opts, "load_users", 4) or 4)}

    def run(self) -> None:
        assert self.api is not None and self.session is not None
        p = self.p
        self.set_users(p["users"])
        self.sending = True
        self.event(f"load: {p['users']} users")
        gevent.sleep(p["load_s"])
        self.sending = False
        # Wait until every user's request in flight has been answered and recorded.
        self.wait_until(lambda: self.in_flight == 0, self.request_timeout,
                        "the users' last requests")
        p["last_answer_t"] = last = self.last_answer()
        self.event("silence (last answer)", at=last)
        self.set_users(0)
        p["zero_t"] = self.wait_ready_zero()
        self.event("zero ready replicas")
        gevent.sleep(1.0)  # let the 0.5 s sampler see (and the picture show) the zero
        before = self.api.metric("allinone_cold_starts_total", self.function)
        ok, ms, _ = self.invoke(self.session, "next request (cold)")
        after = self.api.metric("allinone_cold_starts_total", self.function)
        p["next_request"] = {"ok": ok, "ms": round(ms, 3),
                             "cold": None if before is None or after is None
                             else after - before == 1}
        self.event("next request answered")
        gevent.sleep(1.0)  # show the pod that request started

    def wait_ready_zero(self) -> float:
        """When ready replicas reached 0: the send time of the first poll that saw 0.

        Polls every 0.1 s. The send time, not the answer's, so that the API's own latency
        is not counted; the change happened in the 0.1 s before it.
        """
        deadline = time.monotonic() + self.zero_timeout()
        while True:
            sent = self.now()
            if self.status().get("readyReplicas", 0) == 0:
                return round(sent, 3)
            if time.monotonic() > deadline:
                raise ScenarioError(f"{self.function} still has ready replicas "
                                    f"{self.zero_timeout():.0f} s after the load stopped")
            gevent.sleep(POLL_INTERVAL)

    def evaluate(self) -> list[Criterion]:
        rep, p = self.report, self.p
        out = [no_failures(rep.records)]
        # Knative's rule: the stable window must empty (desired 0), then the last pod is
        # kept for the grace period.
        grace = float(self.scaling.get("scaleToZeroGracePeriodSeconds", 30))
        window = float(self.scaling.get("stableWindowSeconds", 60))
        limit = round(window + grace + 2 * self.tick + POLL_INTERVAL, 3)
        last, zero = p.get("last_answer_t"), p.get("zero_t")
        took = None if last is None or zero is None else round(zero - last, 3)
        out.append(at_most(f"zero within window + grace + 2 ticks ({limit:g} s)", took, limit,
                           "s", f"ready replicas reached 0 after the last answer (window "
                           f"{window:g} s + grace {grace:g} s + 2 x tick {self.tick:g} s + "
                           f"{POLL_INTERVAL:g} s polling)"))
        nxt = p.get("next_request")
        if nxt is None:
            out.append(Criterion("next request succeeds", False, None, True,
                                 "the next request was never made"))
        else:
            # Only a request seen as a cold start proves the function was at zero; an
            # unreadable /metrics proves nothing, so it fails too.
            ok = bool(nxt["ok"]) and nxt["cold"] is True
            how = {True: "as a cold start", False: "but NOT as a cold start (a pod was "
                   "still serving)", None: "(cold start not checked: /metrics unreadable)"}
            out.append(Criterion("next request succeeds", ok, nxt["ok"], True,
                                 f"the next request {'succeeded' if nxt['ok'] else 'FAILED'} "
                                 f"in {nxt['ms']:.0f} ms {how[nxt['cold']]}"))
        load = [r for r in rep.records if r[3] == "invoke"]
        rep.figures.update({
            "zero_after_last_answer_s": took,
            "zero_limit_s": limit,
            "ready_peak": max((s["ready"] for s in rep.samples), default=None),
            "latency_during_load_ms": summarize([float(r[1]) for r in load]),
            "next_request_ms": None if nxt is None else nxt["ms"],
        })
        lat = rep.figures["latency_during_load_ms"]
        rep.figures["headline"] = (
            f"load p50 {fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, peak "
            f"{rep.figures['ready_peak']} pods; zero {took} s after the last answer "
            f"(limit {limit:g} s); next request {fmt_ms(rep.figures['next_request_ms'])} ms")
        if last is not None:
            rep.figures["deadline"] = {"from": last, "to": last + limit,
                                       "label": f"zero within {limit:g} s"}
        return out


SCENARIO = ScaleToZero()


class Shape(ScenarioShape):
    scenario = SCENARIO


class LoadUser(ScenarioUser):
    scenario = SCENARIO
