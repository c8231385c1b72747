"""Cold start: single requests, each made after the function has scaled to zero.

    locust -f loadtests/cold_start.py --headless --host http://127.0.0.1:8080 [--short]

Fixture ``add.py`` with a 1 s scale-to-zero grace period and ``maxScale`` 1. One user
runs the trials (10, or 3 with ``--short``; ``--trials N`` overrides). A trial:

1. wait until the function is at zero: no ready pod, none desired, and no Pod object
   left (the container is removed, so Docker is idle when the request comes);
2. the *cold* request (recorded as ``cold start``), timed by the client;
3. at once a *warm* request to the pod the cold one started (``warm``).

The split, per trial and as distributions: ``call`` = the warm request's latency (the
activator, the pod's HTTP server and the function, with no pod to wait for);
``pod wait`` = cold - warm (the autoscaler's poke, ``docker create``/``start``, the
runtime's imports and the readiness probe); ``server`` = the activator's own latency of
the cold request, from the ``allinone_cold_start_latency_seconds`` histogram's sum in
``GET /metrics`` (so cold - server is what the client and HTTP add). The warm call is
a stand-in for the call inside the cold one: close, not exact.

Criterion: no failed request. Optional: ``--max-p50-ms``/``--max-p95-ms`` on the cold
latency (off by default).
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
from locust import events

from loadtests.common import FIXTURES, Scenario, ScenarioShape, ScenarioUser
from loadtests.report import Criterion, fmt_ms, no_failures, summarize

COLD_METRIC = "allinone_cold_start_latency_seconds"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--trials", type=int, default=0,
                        help="cold start trials (default 10, 3 with --short)")


class ColdStart(Scenario):
    name = "cold_start"
    fixture = FIXTURES / "add.py"
    body = {"x": 1, "y": 2}
    spec = {"scaling": {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6,
                        "maxScale": 1}}

    def __init__(self) -> None:
        super().__init__()
        self.trials: list[dict[str, Any]] = []
        self.trials_done = gevent.event.Event()

    def parameters(self, short: bool) -> dict[str, Any]:
        n = int(getattr(self.opts, "trials", 0) or 0) or (3 if short else 10)
        return {"trials": n}

    def prepare(self) -> None:
        self.wait_zero()

    def run(self) -> None:
        self.set_users(1)
        self.sending = True
        self.trials_done.wait()
        self.sending = False
        gevent.sleep(1.0)  # so that the replicas of the last trial are in the picture

    def trial(self, client: Any) -> None:
        """One trial, run by the user (so the requests are locust's)."""
        if len(self.trials) >= self.p["trials"]:
            self.sending = False
            self.trials_done.set()
            return
        assert self.api is not None
        waited = self.wait_zero()
        n = len(self.trials) + 1
        self.event(f"trial {n}: at zero")
        sum0 = self.api.metric(COLD_METRIC + "_sum", self.function)
        cnt0 = self.api.metric(COLD_METRIC + "_count", self.function)
        ok, cold_ms, _ = self.invoke(client, "cold start")
        ok_warm, warm_ms, _ = self.invoke(client, "warm")
        sum1 = self.api.metric(COLD_METRIC + "_sum", self.function)
        cnt1 = self.api.metric(COLD_METRIC + "_count", self.function)
        server_ms = None
        # The trial measured a cold start only if the server counted exactly one (ours)
        # in between; None when /metrics could not be read.
        cold = None if cnt0 is None or cnt1 is None else cnt1 - cnt0 == 1
        if sum0 is not None and sum1 is not None and cold:
            server_ms = round((sum1 - sum0) * 1000.0, 3)
        row = {"trial": n, "at_zero_t": round(waited, 3), "ok": ok and ok_warm, "cold": cold,
               "cold_ms": round(cold_ms, 3), "warm_ms": round(warm_ms, 3),
               "pod_wait_ms": round(cold_ms - warm_ms, 3), "server_ms": server_ms}
        self.trials.append(row)
        if len(self.trials) >= self.p["trials"]:
            self.sending = False
            self.trials_done.set()

    def key_latencies(self) -> tuple[str, list[float]]:
        return "cold start", [t["cold_ms"] for t in self.trials]

    def evaluate(self) -> list[Criterion]:
        rep = self.report
        tr = self.trials
        rep.figures.update({
            "trials": tr,
            "cold_ms": summarize([t["cold_ms"] for t in tr]),
            "warm_call_ms": summarize([t["warm_ms"] for t in tr]),
            "pod_wait_ms": summarize([t["pod_wait_ms"] for t in tr]),
            "server_cold_ms": summarize([t["server_ms"] for t in tr
                                         if t["server_ms"] is not None]),
            "split": "call = warm request right after; pod wait = cold - warm; server = "
                     "activator latency of the cold request (/metrics histogram sum)",
        })
        f = rep.figures
        f["headline"] = (
            f"cold start over {len(tr)} trials: p50 {fmt_ms(f['cold_ms']['p50'])} ms, "
            f"p95 {fmt_ms(f['cold_ms']['p95'])} ms, max {fmt_ms(f['cold_ms']['max'])} ms; "
            f"p50 split: pod wait {fmt_ms(f['pod_wait_ms']['p50'])} ms + call "
            f"{fmt_ms(f['warm_call_ms']['p50'])} ms; activator-side "
            f"{fmt_ms(f['server_cold_ms']['p50'])} ms")
        out = [no_failures(rep.records)]
        not_cold = [t["trial"] for t in tr if t["cold"] is not True]
        out.append(Criterion("every trial was cold", not not_cold, len(tr) - len(not_cold),
                             len(tr), "each trial's request was counted as a cold start"
                             if not not_cold else f"trials {not_cold} were not counted as cold "
                             "starts (a pod was still up, or /metrics unreadable)"))
        if len(tr) < self.p["trials"]:
            out.append(Criterion("all trials ran", False, len(tr), self.p["trials"],
                                 f"only {len(tr)} of {self.p['trials']} trials ran"))
        return out


SCENARIO = ColdStart()


class Shape(ScenarioShape):
    scenario = SCENARIO


class ColdStartUser(ScenarioUser):
    scenario = SCENARIO

    def work(self) -> None:
        SCENARIO.trial(self.client)
