"""Workflow load: users run a workflow back to back; no execution may fail.

    locust -f loadtests/workflow_load.py --headless --host http://127.0.0.1:8080 [--short]

Fixture ``workflows/functions/inc.py`` (``minScale`` 1, ``maxScale`` 4, ``target`` 2)
and a workflow ``lt-workflow-load`` of five states: Task ``inc`` -> Choice (``n`` > 0)
-> a Map of three ``inc`` calls over ``[n, n, n]`` (``MaxConcurrency`` 2) -> Pass
summing nothing but shaping the output -> Succeed. Each execution is a synchronous
``POST /workflow/NAME``: 4 Task invocations, two of them concurrent, all through the
activator, so the function is autoscaled by workflow traffic.

The driver runs ``--wf-users`` users (default 4) for 20 s (8 s short). Criteria: every
request answered 200 with ``status: SUCCEEDED`` and the expected output (a failed
execution is a 200 too, so the body is checked), and at least one execution ran.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gevent
from locust import events
from locust.clients import HttpSession

from loadtests.common import FIXTURES, Scenario, ScenarioError, ScenarioShape, ScenarioUser
from loadtests.report import Criterion, fmt_ms, no_failures, summarize

WORKFLOW = "lt-workflow-load"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--wf-users", type=int, default=4,
                        help="users running the workflow (default 4)")


def definition(function: str) -> dict[str, Any]:
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


class WorkflowLoad(Scenario):
    name = "workflow_load"
    fixture = FIXTURES / "workflows" / "functions" / "inc.py"
    body = {"n": 1}
    spec = {"scaling": {"minScale": 1, "maxScale": 4, "target": 2,
                        "stableWindowSeconds": 10, "scaleToZeroGracePeriodSeconds": 5}}

    def parameters(self, short: bool) -> dict[str, Any]:
        return {"hold_s": 8.0 if short else 20.0,
                "users": int(getattr(self.opts, "wf_users", 4) or 4),
                "workflow": WORKFLOW}

    @property
    def path(self) -> str:
        return f"/workflow/{WORKFLOW}"

    def expected(self) -> dict[str, Any]:
        n = int(json.loads(self.body_bytes).get("n", 1)) + 1
        return {"n": n, "results": [n + 1] * 3}

    def prepare(self) -> None:
        api = self.api
        assert api is not None
        body = {"name": WORKFLOW, "definition": definition(self.function)}
        resp = api.http.post(api.base + "/api/v1/workflows", json=body, timeout=api.timeout)
        if resp.status_code == 409:
            resp = api.http.put(api.base + f"/api/v1/workflows/{WORKFLOW}",
                                json={"definition": body["definition"]}, timeout=api.timeout)
        if resp.status_code not in (200, 201):
            raise ScenarioError(f"could not deploy the workflow: HTTP {resp.status_code} "
                                f"{resp.text[:300]}")

    def run(self) -> None:
        p = self.p
        self.set_users(p["users"])
        self.sending = True
        p["start_t"] = self.event(f"{p['users']} users run {WORKFLOW}")
        gevent.sleep(p["hold_s"])
        self.sending = False
        self.event("load stops")
        deadline = time.monotonic() + 60
        while self.in_flight and time.monotonic() < deadline:
            gevent.sleep(0.1)

    def _invoke(self, client: HttpSession, name: str) -> tuple[bool, float, Any]:
        t = time.perf_counter()
        with client.post(self.path, data=self.body_bytes, name=name, catch_response=True,
                         headers={"Content-Type": "application/json"},
                         timeout=self.request_timeout) as resp:
            ms = (time.perf_counter() - t) * 1000.0
            try:
                out = resp.json() if resp.status_code == 200 else None
            except ValueError:
                out = None
            if out is None:
                msg = f"HTTP {resp.status_code}: {resp.text[:200]}"
            elif out.get("status") != "SUCCEEDED":
                msg = f"execution {out.get('status')}: {out.get('error')}: {out.get('cause')}"
            elif out.get("output") != self.expected():
                msg = f"wrong output {json.dumps(out.get('output'))[:200]}"
            else:
                return True, ms, out
            resp.failure(msg)
            return False, ms, msg

    def evaluate(self) -> list[Criterion]:
        rep = self.report
        lat = summarize([float(r[1]) for r in rep.records])
        rep.figures.update({
            "executions": len(rep.records),
            "execution_latency_ms": lat,
            "executions_per_s": round(len(rep.records) / self.p["hold_s"], 2),
        })
        rep.figures["headline"] = (
            f"{len(rep.records)} executions of a 4-invocation workflow by {self.p['users']} "
            f"users: p50 {fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms, "
            f"{rep.figures['executions_per_s']} executions/s")
        ran = Criterion("executions ran", bool(rep.records), len(rep.records), 1,
                        "no execution ran" if not rep.records else "")
        return [ran, no_failures(rep.records, "executions")]


SCENARIO = WorkflowLoad()


class Shape(ScenarioShape):
    scenario = SCENARIO


class WorkflowUser(ScenarioUser):
    scenario = SCENARIO

    def work(self) -> None:
        SCENARIO.invoke(self.client, "workflow")
