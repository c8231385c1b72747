"""The thin locust adapter that runs one scenario of :mod:`loadtests.scenarios`:
``locust -f loadtests/locustfile.py --headless --host URL --scenario NAME [--short] ...``.

On ``test_start`` it deploys through :mod:`allinone.client` and waits for the start
state; then the sampler (every 0.5 s each function's replicas and the autoscaler's view,
every 2 s its pods' CPU and memory) and the driver run as greenlets. Each request is a
record ``[t, ms, ok, name, error]``. On ``quitting`` it judges, deletes what it deployed
(unless ``--keep``), writes the report and exits 1 when a criterion failed. Users send
only while ``sending`` is true, so the driver alone decides when load starts and stops;
the shape hands locust its user count. ``--max-seconds`` caps the run (``--run-time``
does not apply to shapes). Local runner only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust import HttpUser, LoadTestShape, constant, events, task
from locust.clients import HttpSession
from locust.env import Environment

from allinone.client import ApiError, Client, error_from, poll
from loadtests.report import Report, at_most, percentile, pod_usage, write_report
from loadtests.scenarios import FIXTURES, POLL_INTERVAL, SCENARIOS, ScenarioError, no_failures

log = logging.getLogger("loadtests")
SAMPLE_INTERVAL = 0.5  # s between the sampler's reads of the function
USAGE_EVERY = 4  # samples between two reads of the pods' usage (2 s: the server's period)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    add = parser.add_argument
    add("--scenario", choices=list(SCENARIOS), default="scale_up", help="which scenario")
    add("--short", action="store_true", default=False, help="the short (CI) form")
    add("--tick", type=float, default=2.0, metavar="S", help="the server's autoscaler tick")
    add("--report", default="", metavar="PATH", help="JSON report path")
    add("--keep", action="store_true", default=False, help="keep the deployed function")
    add("--max-seconds", type=float, default=0.0, metavar="S", help="stop (failed) after S s")
    for q in (50, 95):
        add(f"--max-p{q}-ms", type=float, default=0.0, metavar="MS",
            help=f"key latency p{q} limit (default off)")
    for sc in SCENARIOS.values():
        for name, (kind, text) in sc.options.items():
            full, short = sc.params[name]
            add("--" + name.replace("_", "-"), type=kind, help=f"{sc.name}: {text} (default "
                f"{full}{f', {short} with --short' if short != full else ''})")


class Runner:
    """One scenario's run: the ``Run`` the scenarios' drivers and judges see."""

    def __init__(self) -> None:
        self.env: Environment | None = None
        self.sc = SCENARIOS["scale_up"]
        self.api, self.report = Client(), Report("")
        self.p: dict[str, Any] = self.report.params
        self.function, self.path, self.functions, self.bodies = "", "", [], [b"{}"]
        self.fn: dict[str, Any] = {}
        self.scaling: dict[str, Any] = {}
        self.t0: float | None = None
        self.tick = 2.0
        self.users = self.in_flight = self.answered = self.round = 0
        self.sending = self.quit = False
        self.finished, self.gate = gevent.event.Event(), gevent.event.Event()
        self.session: HttpSession | None = None
        self.greenlets: list[gevent.Greenlet] = []
        self.sleep = gevent.sleep
        events.test_start.add_listener(self.set_up)
        events.request.add_listener(self.record)
        events.quitting.add_listener(self.finish)

    def now(self) -> float:
        return time.time() - (self.t0 or 0.0)

    def event(self, label: str, **extra: Any) -> float:
        t = round(self.now(), 3)
        self.report.events.append({"t": t, "label": label, **extra})
        log.info("[%s] %.1f s: %s", self.sc.name, t, label)
        return t

    def set_users(self, n: int, timeout: float = 60.0) -> None:
        """Ask the shape for ``n`` users and wait until locust has started them all."""
        assert self.env is not None and self.env.runner is not None
        runner, self.users = self.env.runner, n
        self.wait_until(lambda: runner.user_count == n, timeout, f"locust to reach {n} users",
                        0.05)

    def status(self, fn: str, by: str = "driver") -> dict[str, Any]:
        """``fn``'s status now; the main function's is kept as a sample, at the time its GET
        was sent (``by`` the sampler or the driver)."""
        sent, st = time.time(), self.api.get(fn).get("status", {})
        if fn == self.function:
            auto = st.get("autoscaler") or {}
            self.report.samples.append({
                "t": round(sent - (self.t0 or sent), 3), "ready": st.get("readyReplicas", 0),
                "desired": st.get("desiredReplicas", 0), "replicas": st.get("replicas", 0),
                "stable": auto.get("stableConcurrency"),
                "panic_concurrency": auto.get("panicConcurrency"), "panic": auto.get("panic"),
                "reason": auto.get("reason"), "by": by})
        return dict(st)

    def wait_until(self, cond: Callable[[], bool], timeout: float, what: str,
                   interval: float = POLL_INTERVAL) -> float:
        """Poll ``cond`` (the client's one wait loop; locust's gevent patches its sleep);
        the time (since t0) the poll that saw it started."""
        def sent_if() -> tuple[float] | None:
            sent = self.now()
            return (sent,) if cond() else None
        return float(poll(sent_if, timeout, what, interval)[0])

    def zero_timeout(self) -> float:
        return sum(float(self.scaling[k]) for k in ("scaleToZeroGracePeriodSeconds",
                                                    "stableWindowSeconds")) + 10 * self.tick + 30

    def wait_zero(self) -> float:
        """Until no ready pod, none desired and no Pod object left (the container is gone);
        the time since t0."""
        self.api.wait_replicas(self.function, 0, 0, self.zero_timeout(), no_pods=True)
        return self.now()

    def request_timeout(self) -> float:
        return float(self.fn["spec"]["timeoutSeconds"]) + 30.0

    def call(self, name: str, client: Any = None) -> tuple[bool, float, Any]:
        """One recorded call of the function: (ok, latency ms, parsed body or error)."""
        self.in_flight += 1
        t = time.perf_counter()
        try:
            with (client or self.session).post(
                    self.path, name=name, data=random.choice(self.bodies), catch_response=True,
                    timeout=self.request_timeout(),
                    headers={"Content-Type": "application/json"}) as resp:
                ms, out = (time.perf_counter() - t) * 1000.0, None
                if resp.status_code == 0:
                    msg = f"no answer: {resp.error!r}"
                elif resp.status_code != 200:
                    msg = f"HTTP {resp.status_code}: {error_from(resp).message}"
                else:
                    try:
                        out = resp.json()
                    except ValueError:
                        msg = "HTTP 200 with a body that is not JSON"
                    else:
                        msg = self.sc.check(self, out) if self.sc.check else None
                if msg is None:
                    return True, ms, out
                resp.failure(msg)
                return False, ms, msg
        finally:
            self.in_flight -= 1

    def open_gate(self) -> None:
        self.round += 1
        self.gate.set()
        self.gate = gevent.event.Event()

    def stop(self, error: str = "", trace: bool = False) -> None:
        """End the scenario now (the driver is done, or an error: set-up, the time cap)."""
        if error:
            self.report.errors.append(error)
            log.error("[%s] %s", self.sc.name, error, exc_info=trace)
        self.sending = False
        self.finished.set()

    def set_up(self, environment: Environment, **_: Any) -> None:
        if self.env is not None:
            return
        self.env, opts = environment, environment.parsed_options
        self.sc = sc = SCENARIOS[opts.scenario]
        if opts.max_seconds > 0:
            gevent.spawn_later(opts.max_seconds, self.stop, f"stopped at --max-seconds "
                               f"{opts.max_seconds:g}: the scenario had not finished")
        self.tick, self.function = opts.tick, sc.function or "lt-" + sc.name.replace("_", "-")
        self.path = f"/workflow/{sc.workflow}" if sc.workflow else f"/function/{self.function}"
        self.p = {k: v[opts.short] for k, v in sc.params.items()}
        self.p.update({k: getattr(opts, k) for k in sc.options if getattr(opts, k) is not None})
        rep = self.report = Report(sc.name, short=opts.short, tick_seconds=opts.tick,
                                   server=(environment.host or "").rstrip("/"),
                                   function=self.function, params=self.p)
        self.p.update(body=sc.body, fixture=sc.fixture)
        self.bodies, self.functions = [json.dumps(sc.body).encode()], [self.function]
        try:
            if not rep.server:
                raise ScenarioError("no --host: give the server's address, e.g. "
                                    "--host http://127.0.0.1:8080")
            self.api = Client(rep.server, token=os.environ.get("ALLINONE_TOKEN"), timeout=60)
            self.session = HttpSession(rep.server, environment.events.request, None)
            self.session.trust_env = False
            log.info("[%s] deploying %s as %s", sc.name, sc.fixture, self.function)
            t = time.monotonic()
            self.fn = self.api.deploy(self.function, FIXTURES / sc.fixture, sc.spec)
            rep.deployed, rep.figures["deploy_to_ready_s"] = True, round(time.monotonic() - t, 3)
            self.scaling = rep.scaling = dict(self.fn["spec"]["scaling"])
            if sc.setup is not None:
                sc.setup(self)
            if sc.start:  # "zero" (no pod left either) or "floor" (minScale ready)
                n = int(self.scaling["minScale"]) if sc.start == "floor" else 0
                self.api.wait_replicas(self.function, n, n, self.zero_timeout(), no_pods=not n)
        except (ScenarioError, ApiError) as exc:
            return self.stop(f"set-up failed: {exc}")
        self.t0 = rep.started_at = time.time()
        self.greenlets = [gevent.spawn(self.sample_loop), gevent.spawn(self.drive)]

    def drive(self) -> None:
        try:
            self.sc.drive(self)
        except Exception as exc:  # ApiError: a Timeout of a wait too; else a bug: never hang
            known = isinstance(exc, (ScenarioError, ApiError))
            return self.stop(str(exc) if known else f"driver failed: {type(exc).__name__}: "
                             f"{exc}", trace=not known)
        self.stop()

    def sample_loop(self) -> None:
        """The main function's samples; with several functions each one's replicas
        (``figures.replicas_by_function``); every 2 s each one's CPU and memory."""
        figs = self.report.figures
        next_t, n = time.time(), 0
        while True:
            t = time.time()
            at = round(t - (self.t0 or t), 3)
            try:
                for fn in self.functions:
                    st = self.status(fn, "sampler")
                    if len(self.functions) > 1:
                        figs.setdefault("replicas_by_function", {}).setdefault(fn, []).append(
                            [at, st.get("readyReplicas", 0), st.get("desiredReplicas", 0)])
                    if n % USAGE_EVERY == 0:
                        figs.setdefault("usage_by_function", {}).setdefault(fn, []).append(
                            [at, *pod_usage(self.api.pods(fn))])
            except (ApiError, ValueError):
                figs["sample_errors"] = figs.get("sample_errors", 0) + 1
            n, next_t = n + 1, next_t + SAMPLE_INTERVAL
            gevent.sleep(max(0.0, next_t - time.time()))

    def record(self, name: str, response_time: float, exception: Exception | None = None,
               start_time: float | None = None, **_: Any) -> None:
        if self.t0 is not None:
            start = start_time or time.time() - response_time / 1000
            self.report.records.append([
                round(start - self.t0, 4), round(float(response_time), 3), exception is None,
                name, None if exception is None else str(exception)[:300]])

    def judge(self, opts: Any) -> None:
        """The scenario's criteria and the optional latency thresholds."""
        rep, key = self.report, self.sc.key_latency
        rep.duration_s = time.time() - (self.t0 or time.time())
        rep.figures["peak_usage_by_function"] = {
            fn: {"cpu_percent": max(r[1] for r in rows),
                 "memory_mib": round(max(r[2] for r in rows) / 2**20, 1)}
            for fn, rows in rep.figures.get("usage_by_function", {}).items() if rows}
        rep.criteria = [no_failures(rep.records, self.sc.requests), *self.sc.judge(self)]
        values = [float(r[1]) for r in rep.records if key in ("", r[3])]
        for q, limit in ((50, opts.max_p50_ms), (95, opts.max_p95_ms)):
            label = f"{key or 'request'} latency p{q}"
            rep.criteria += [at_most(f"{label} <= {limit:g} ms", percentile(values, q), limit,
                                     "ms", label)] if limit else []

    def finish(self, environment: Environment, **_: Any) -> None:
        if self.quit or self.env is None:
            return
        self.quit, rep, opts = True, self.report, environment.parsed_options
        if len(self.greenlets) == 2 and not self.greenlets[1].dead:
            rep.errors.append("stopped before the scenario finished (SIGTERM, Ctrl-C or a "
                              "time cap): the criteria below cover only what ran")
        gevent.killall(self.greenlets)
        rep.samples.sort(key=lambda x: x["t"])  # the sampler's and the driver's readings
        if self.t0 is not None:
            try:
                self.judge(opts)
            except Exception as exc:
                log.exception("[%s] judging the criteria failed", self.sc.name)
                rep.errors.append(f"evaluating the criteria failed: {exc}")
        try:
            if self.sc.workflow and rep.deployed and not opts.keep:
                self.api.delete_workflow(self.sc.workflow, missing_ok=True)
            for fn in self.functions if rep.deployed and not opts.keep else ():
                self.api.delete(fn, missing_ok=True)
        except ApiError as exc:
            log.warning("[%s] could not delete what it deployed: %s", self.sc.name, exc)
        out = Path(opts.report or Path(__file__).parent / "reports" / f"{self.sc.name}.json")
        write_report(rep, out)
        for line in [f"{'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in rep.criteria] + [
                f"ERROR: {e}" for e in rep.errors]:
            log.info("[%s] %s", self.sc.name, line)
        log.info("[%s] %s; report: %s", self.sc.name, "passed" if rep.passed else "FAILED", out)
        environment.process_exit_code = 0 if rep.passed else 1


RUN = Runner()


class Shape(LoadTestShape):
    """Hands locust the driver's user count; ends the test when the driver is done."""

    def tick(self) -> tuple[int, float] | None:
        return None if RUN.finished.is_set() else (RUN.users, 100.0)


class ScenarioUser(HttpUser):
    """Back to back while the scenario is sending (``gate`` users: once per round)."""

    wait_time = constant(0)
    round_seen = 0

    def on_start(self) -> None:
        self.client.trust_env = False

    @task
    def work(self) -> None:
        if not RUN.sending:
            gevent.sleep(0.02)
            return
        if RUN.sc.users == "gate":
            if RUN.round <= self.round_seen:
                RUN.gate.wait(timeout=0.5)
                return
            self.round_seen = RUN.round
        try:
            RUN.call(RUN.sc.request_name, self.client)
        finally:
            RUN.answered += 1
