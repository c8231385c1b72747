"""What every locustfile of ``loadtests/`` shares: options, the API, sampling, the report.

A scenario is a :class:`Scenario` subclass instantiated once at the top of its
locustfile, plus a :class:`ScenarioShape` and a :class:`ScenarioUser` subclass that
point at it. The instance hooks into locust's events:

- ``init_command_line_parser``: the options below (shared by every scenario);
- ``test_start``: set-up. Deploy the scenario's fixture through the HTTP API (or take
  ``--function NAME``), wait for Ready and for what the scenario needs (zero replicas,
  a warm pod), then start two greenlets: the *sampler*, which reads ``GET
  /api/v1/functions/NAME`` every 0.5 s (ready and desired replicas, the autoscaler's
  view; the driver's own readings while it waits for a state, every 0.1 s, are kept
  too, marked ``"by": "driver"``), and the *driver*, the scenario's script
  (:meth:`Scenario.run`), which sets the user count the shape hands to locust and says
  when the users send;
- ``request``: one record per request, ``[t, ms, ok, name, error]``, for latency over
  time (``t`` is the start, in seconds since set-up finished);
- ``quitting``: stop the greenlets, check the criteria (:meth:`Scenario.evaluate`),
  delete the function the scenario deployed (unless ``--keep``), write the JSON report
  and set locust's exit code: 1 when any criterion failed, else 0.

Users never send while :attr:`Scenario.sending` is false, so the driver decides exactly
when load starts and stops (a user stopped by locust mid-request would leave a request
that is neither counted nor answered). The shape returns the driver's user count and
ends the test (``None``) when the driver has finished.

Options (locust 2.47's ``--help`` does not list a locustfile's own options; each
scenario's extra ones are in its docstring and in ``loadtests/README.md``):
``--function NAME`` use a deployed function instead of the fixture, ``--body JSON`` the
request body, ``--short`` the CI form, ``--tick S`` the server's autoscaler tick
(``allinone serve --tick``, 2 s by default), ``--report PATH`` where the JSON goes
(default ``loadtests/reports/SCENARIO.json``), ``--keep`` keep the deployed function,
``--max-p50-ms`` / ``--max-p95-ms`` optional latency thresholds (off by default: these
machines are shared and noisy; the report always has the measured figures),
``--max-seconds S`` a time cap after which the scenario stops and fails (locust's
``--run-time`` only starts counting once a shape has finished).

Only the local runner is supported (no ``--processes``/workers): records and samples
live in this one process.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust import HttpUser, LoadTestShape, constant, events, task
from locust.clients import HttpSession
from locust.env import Environment
from locust.runners import WorkerRunner

from allinone.client import ApiError, Client, error_from
from loadtests.report import Criterion, Report, latency_threshold, write_report

log = logging.getLogger("loadtests")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
REPORT_DIR = ROOT / "loadtests" / "reports"
SAMPLE_INTERVAL = 0.5  # s between reads of the function's replicas
POLL_INTERVAL = 0.1  # s between reads while the driver waits for a state


class ScenarioError(Exception):
    """The scenario cannot go on (set-up failed, a state was never reached)."""


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--function", default="", metavar="NAME",
                        help="use this deployed function instead of deploying the fixture")
    parser.add_argument("--body", default="", metavar="JSON",
                        help="request body (default: the scenario's, for its fixture)")
    parser.add_argument("--short", action="store_true", default=False,
                        help="the short (CI) form: fewer trials, shorter phases")
    parser.add_argument("--tick", type=float, default=2.0, metavar="S",
                        help="the server's autoscaler tick (allinone serve --tick; default 2)")
    parser.add_argument("--report", default="", metavar="PATH",
                        help="JSON report path (default loadtests/reports/SCENARIO.json)")
    parser.add_argument("--keep", action="store_true", default=False,
                        help="do not delete the function the scenario deployed")
    parser.add_argument("--max-seconds", type=float, default=0.0, metavar="S",
                        help="stop the scenario (as failed) after S seconds, set-up "
                             "included (0: no cap; locust's --run-time does not apply to "
                             "shape-driven tests)")
    parser.add_argument("--max-p50-ms", type=float, default=0.0, metavar="MS",
                        help="fail when the scenario's key latency p50 exceeds MS (0: off)")
    parser.add_argument("--max-p95-ms", type=float, default=0.0, metavar="MS",
                        help="fail when the scenario's key latency p95 exceeds MS (0: off)")


# -- the scenario ------------------------------------------------------------------

class Scenario:
    """One scenario's set-up, driver, sampler, criteria and report. Subclass per file."""

    name = "scenario"
    fixture: Path = FIXTURES / "sleep.py"
    body: dict[str, Any] = {"ms": 100}
    # The spec of the deployed fixture; short windows so that runs take seconds.
    spec: dict[str, Any] = {}

    def __init__(self) -> None:
        self.env: Environment | None = None
        self.opts: Any = None
        self.api: Client | None = None
        self.function = ""
        self.fn: dict[str, Any] = {}
        self.report = Report(self.name)
        self.t0: float | None = None
        self.users = 0  # what the shape hands to locust
        self.spawn_rate = 100.0
        self.sending = False  # users send only while this is true
        self.started_users = 0
        self.in_flight = 0  # requests sent through invoke() and not answered yet
        self.finished = gevent.event.Event()
        self.body_bytes = b"{}"
        self.session: HttpSession | None = None
        self._sampler: gevent.Greenlet | None = None
        self._driver: gevent.Greenlet | None = None
        self._set_up = False
        self._quit = False
        self.sample_errors = 0
        events.init.add_listener(self._on_init)
        events.test_start.add_listener(self._on_test_start)
        events.request.add_listener(self._on_request)
        events.quitting.add_listener(self._on_quitting)

    # -- to override ---------------------------------------------------------------

    def parameters(self, short: bool) -> dict[str, Any]:
        """The scenario's parameters (phase lengths, users...); recorded in the report."""
        return {}

    def prepare(self) -> None:
        """After Ready, before t0: bring the function to the state the scenario starts in."""

    def run(self) -> None:
        """The driver: set users, flip :attr:`sending`, record events. Runs after t0."""
        raise NotImplementedError

    def evaluate(self) -> list[Criterion]:
        """The criteria, from the records, samples and events."""
        raise NotImplementedError

    def key_latencies(self) -> tuple[str, list[float]]:
        """The latencies the optional ``--max-p50-ms``/``--max-p95-ms`` thresholds check."""
        return "request latency", [float(r[1]) for r in self.report.records]

    # -- helpers for drivers ------------------------------------------------------

    @property
    def p(self) -> dict[str, Any]:
        return self.report.params

    @property
    def scaling(self) -> dict[str, Any]:
        return self.report.scaling

    @property
    def tick(self) -> float:
        return self.report.tick_seconds

    @property
    def path(self) -> str:
        return f"/function/{self.function}"

    @property
    def request_timeout(self) -> float:
        return float(self.fn["spec"]["timeoutSeconds"]) + 30.0

    def now(self) -> float:
        """Seconds since t0 (set-up finished)."""
        assert self.t0 is not None
        return time.time() - self.t0

    def event(self, label: str, **extra: Any) -> float:
        t = round(self.now(), 3)
        self.report.events.append({"t": t, "label": label, **extra})
        log.info("[%s] %.1f s: %s", self.name, t, label)
        return t

    def set_users(self, n: int, timeout: float = 60.0) -> None:
        """Ask the shape for ``n`` users and wait until locust has started them all."""
        assert self.env is not None and self.env.runner is not None
        self.users = n
        deadline = time.monotonic() + timeout
        while self.env.runner.user_count != n or (n > 0 and self.started_users < n):
            if time.monotonic() > deadline:
                raise ScenarioError(f"locust did not reach {n} users in {timeout:.0f} s "
                                    f"(has {self.env.runner.user_count})")
            gevent.sleep(0.05)

    def status(self) -> dict[str, Any]:
        """The function's status now; after t0 it is also kept as a sample (``by: driver``)."""
        assert self.api is not None
        sent = time.time()
        fn = self.api.find(self.function)
        if fn is None:
            raise ScenarioError(f"function {self.function} was deleted during the scenario")
        st: dict[str, Any] = fn.get("status", {})
        self._sample(sent, st, "driver")
        return st

    def _sample(self, sent: float, st: dict[str, Any], by: str) -> None:
        """Keep one reading of the function's status, at the time its GET was sent."""
        if self.t0 is None:
            return
        auto = st.get("autoscaler") or {}
        self.report.samples.append({
            "t": round(sent - self.t0, 3),
            "ready": st.get("readyReplicas", 0),
            "desired": st.get("desiredReplicas", 0),
            "replicas": st.get("replicas", 0),
            "stable": auto.get("stableConcurrency"),
            "panic_concurrency": auto.get("panicConcurrency"),
            "panic": auto.get("panic"),
            "reason": auto.get("reason"),
            "by": by,
        })

    def wait_until(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``cond`` every 0.1 s; returns the time (since t0, or epoch before t0)."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
            gevent.sleep(POLL_INTERVAL)
        return self.now() if self.t0 is not None else time.time()

    def at_zero(self) -> bool:
        """No ready pod, none desired, and no pod object left (the container is gone)."""
        assert self.api is not None
        st = self.status()
        if st.get("readyReplicas", 0) or st.get("desiredReplicas", 0):
            return False
        return not self.api.pods(self.function)

    def zero_timeout(self) -> float:
        """How long scaling to zero may take from now: grace, a stable window, ticks, slack."""
        s = self.scaling
        return float(s.get("scaleToZeroGracePeriodSeconds", 30)) + \
            float(s.get("stableWindowSeconds", 60)) + 10 * self.tick + 30.0

    def wait_zero(self) -> float:
        return self.wait_until(self.at_zero, self.zero_timeout(), f"{self.function} at zero")

    def invoke(self, client: HttpSession, name: str) -> tuple[bool, float, Any]:
        """One recorded call of the function: (ok, latency ms, parsed body or error)."""
        self.in_flight += 1
        try:
            return self._invoke(client, name)
        finally:
            self.in_flight -= 1

    def _invoke(self, client: HttpSession, name: str) -> tuple[bool, float, Any]:
        t = time.perf_counter()
        with client.post(self.path, data=self.body_bytes, name=name, catch_response=True,
                         headers={"Content-Type": "application/json"},
                         timeout=self.request_timeout) as resp:
            ms = (time.perf_counter() - t) * 1000.0
            if resp.status_code == 200:
                try:
                    return True, ms, resp.json()
                except ValueError:
                    resp.failure("HTTP 200 with a body that is not JSON")
                    return False, ms, resp.text[:200]
            msg = f"HTTP {resp.status_code}: {error_from(resp).message}"
            if resp.status_code == 0:
                msg = f"no answer: {resp.error!r}"
            resp.failure(msg)
            return False, ms, msg

    def fail(self, message: str) -> None:
        """End the scenario now with an error (from a user or the driver)."""
        if message not in self.report.errors:
            self.report.errors.append(message)
            log.error("[%s] %s", self.name, message)
        self.sending = False
        self.finished.set()

    def last_answer(self, name: str | None = None) -> float | None:
        """When the last recorded request (of ``name``) was answered, since t0."""
        ends = [r[0] + r[1] / 1000.0 for r in self.report.records if name in (None, r[3])]
        return max(ends) if ends else None

    # -- locust events ------------------------------------------------------------

    def _on_init(self, environment: Environment, **_: Any) -> None:
        self.env = environment
        self.opts = environment.parsed_options

    def _on_test_start(self, environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner) or self._set_up:
            return
        self._set_up = True
        self.env = environment
        self.opts = opts = environment.parsed_options
        cap = float(getattr(opts, "max_seconds", 0) or 0)
        if cap > 0:
            gevent.spawn_later(cap, self.fail, f"stopped at --max-seconds {cap:g}: the "
                               "scenario had not finished")
        rep = self.report
        rep.short = bool(getattr(opts, "short", False))
        rep.server = (environment.host or "").rstrip("/")
        rep.tick_seconds = float(getattr(opts, "tick", 2.0) or 2.0)
        rep.params = self.parameters(rep.short)
        try:
            if not rep.server:
                raise ScenarioError("no --host: give the server's address, e.g. "
                                    "--host http://127.0.0.1:8080")
            body = getattr(opts, "body", "") or ""
            self.body_bytes = (body or json.dumps(self.body)).encode()
            try:
                if not isinstance(json.loads(self.body_bytes), dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise ScenarioError(f"--body must be a JSON object ({exc})") from None
            rep.params["body"] = json.loads(self.body_bytes)
            self.api = Client(rep.server, token=os.environ.get("ALLINONE_TOKEN"), timeout=60)
            self.session = HttpSession(rep.server, environment.events.request, None)
            self.session.trust_env = False
            self._deploy()
            self.prepare()
        except (ScenarioError, ApiError) as exc:
            why = str(exc)
            rep.errors.append(f"set-up failed: {why}")
            log.error("[%s] set-up failed: %s", self.name, why)
            self.finished.set()
            return
        self.t0 = time.time()
        rep.started_at = round(self.t0, 3)
        self._sampler = gevent.spawn(self._sample_loop)
        self._driver = gevent.spawn(self._drive)

    def _deploy(self) -> None:
        assert self.api is not None
        rep = self.report
        given = getattr(self.opts, "function", "") or ""
        if given:
            if self.api.find(given) is None:
                raise ScenarioError(f"--function {given}: no such function on {rep.server}")
            self.function = given
            self.fn = self.api.wait_ready(given)
        else:
            self.function = "lt-" + self.name.replace("_", "-")
            t = time.monotonic()
            log.info("[%s] deploying %s as %s", self.name, self.fixture.name, self.function)
            self.fn = self.api.deploy(self.function, self.fixture, self.spec)
            rep.deployed = True
            rep.figures["deploy_to_ready_s"] = round(time.monotonic() - t, 3)
        rep.function = self.function
        rep.scaling = dict(self.fn["spec"].get("scaling", {}))
        rep.params["fixture"] = None if given else self.fixture.name

    def _drive(self) -> None:
        try:
            self.run()
        except ScenarioError as exc:
            self.report.errors.append(str(exc))
            log.error("[%s] %s", self.name, exc)
        except Exception as exc:  # a bug in the scenario: report it, never hang
            log.exception("[%s] the driver failed", self.name)
            self.report.errors.append(f"driver failed: {type(exc).__name__}: {exc}")
        finally:
            self.sending = False
            self.finished.set()

    def _sample_loop(self) -> None:
        assert self.api is not None and self.t0 is not None
        next_t = time.time()
        while True:
            t = time.time()
            try:
                fn = self.api.find(self.function)
                self._sample(t, (fn or {}).get("status", {}), "sampler")
            except (ApiError, ValueError):
                self.sample_errors += 1
            next_t += SAMPLE_INTERVAL
            gevent.sleep(max(0.0, next_t - time.time()))

    def _on_request(self, request_type: str, name: str, response_time: float,
                    exception: Exception | None = None, start_time: float | None = None,
                    **_: Any) -> None:
        if self.t0 is None:
            return
        start = start_time if start_time is not None else time.time() - response_time / 1000
        self.report.records.append([
            round(start - self.t0, 4), round(float(response_time), 3), exception is None,
            name, None if exception is None else str(exception)[:300],
        ])

    def _on_quitting(self, environment: Environment, **_: Any) -> None:
        if self._quit or isinstance(environment.runner, WorkerRunner):
            return
        self._quit = True
        rep = self.report
        if self._driver is not None and not self._driver.dead:
            self._driver.kill()
            rep.errors.append("stopped before the scenario finished (SIGTERM, Ctrl-C or a "
                              "time cap): the criteria below cover only what ran")
        if self._sampler is not None:
            self._sampler.kill()
        rep.samples.sort(key=lambda x: x["t"])  # the sampler's and the driver's readings
        if self.t0 is not None:
            rep.duration_s = time.time() - self.t0
            try:
                rep.criteria = self.evaluate()
                label, values = self.key_latencies()
                for q, limit in ((50, getattr(self.opts, "max_p50_ms", 0)),
                                 (95, getattr(self.opts, "max_p95_ms", 0))):
                    c = latency_threshold(label, values, q, limit)
                    if c is not None:
                        rep.criteria.append(c)
            except Exception as exc:
                log.exception("[%s] evaluating the criteria failed", self.name)
                rep.errors.append(f"evaluating the criteria failed: {exc}")
        if self.sample_errors:
            rep.figures["sample_errors"] = self.sample_errors
        if rep.deployed and not getattr(self.opts, "keep", False) and self.api is not None:
            try:
                self.api.delete(self.function, missing_ok=True)
            except ApiError as exc:
                log.warning("[%s] could not delete %s: %s", self.name, self.function, exc)
        out = Path(getattr(self.opts, "report", "") or REPORT_DIR / f"{self.name}.json")
        write_report(rep, out)
        for c in rep.criteria:
            log.info("[%s] %s: %s", self.name, "PASS" if c.passed else "FAIL", c.detail)
        for e in rep.errors:
            log.error("[%s] ERROR: %s", self.name, e)
        log.info("[%s] %s; report: %s", self.name, "passed" if rep.passed else "FAILED", out)
        environment.process_exit_code = 0 if rep.passed else 1


class ScenarioShape(LoadTestShape):
    """Hands locust the driver's user count; ends the test when the driver is done."""

    abstract = True
    scenario: Scenario

    def tick(self) -> tuple[int, float] | None:
        sc = self.scenario
        if sc.finished.is_set():
            return None
        return sc.users, sc.spawn_rate


class ScenarioUser(HttpUser):
    """A closed-loop caller: back to back while the scenario is sending, idle otherwise."""

    abstract = True
    wait_time = constant(0)
    scenario: Scenario
    request_name = "invoke"

    def on_start(self) -> None:
        self.client.trust_env = False
        self.scenario.started_users += 1

    def on_stop(self) -> None:
        self.scenario.started_users -= 1

    @task
    def call(self) -> None:
        if not self.scenario.sending:
            gevent.sleep(0.02)
            return
        try:
            self.work()
        except ScenarioError as exc:  # the scenario cannot go on: report it and end
            self.scenario.fail(str(exc))

    def work(self) -> None:
        """One unit of work while sending; the default is one call of the function."""
        self.scenario.invoke(self.client, self.request_name)
