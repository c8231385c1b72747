"""The one place that wires every component (as faasd's ``cmd/provider.go`` does).

``build_app(settings)`` returns a Sanic app. At ``before_server_start`` it connects to
etcd and builds, in dependency order: informers (Functions, ReplicaSets) -> activator
(data plane) -> autoscaler (reads the activator, writes ReplicaSets) -> build
reconciler (writes templates and Function status) -> kubelet (runs pods, feeds the
activator) -> ReplicaSet controller (decides pods) -> workflow runner (invokes Task
states through the activator; its loop resumes executions a previous server left
running) -> trigger manager. At ``after_server_start`` the long-running loops start
as asyncio tasks (ours, not Sanic's: see the shutdown order). Pods keep running across a restart
of the server and are adopted by the next one.

Start order of ``allinone serve`` (:func:`serve`):

1. raise the soft open-files limit to the hard one (:mod:`allinone.fdlimit`: each
   client and pod connection is a descriptor), before any child inherits it;
2. stop the children an earlier run of this state directory left behind (pidfiles in
   ``STATE/run``: a SIGKILLed server leaves etcd and the registry running);
3. preflight checks (Docker, base image, ports), one line of reason and fix each;
4. the embedded etcd and registry under the :class:`Supervisor` (unless pointed at
   running ones), which restarts them with backoff from then on;
5. Sanic in a single process, on a listening socket we own (so we can close it), with
   a listen backlog of :data:`LISTEN_BACKLOG`.

Shutdown order (SIGTERM or SIGINT), so that nothing in flight is lost:

1. stop accepting: the listening socket is closed at once (new clients are refused);
2. drain: invocations in flight (and those held waiting for a pod) finish, for at most
   ``--drain-seconds`` (default 30);
3. stop the loops (informers, reconcilers, autoscaler, supervisor): no pod or object
   changes from here on;
4. close the sessions (the activator's pooled connections to pods, etcd, Docker);
5. Sanic closes the remaining idle connections and returns; then the supervisor stops
   the embedded registry and etcd, last, because everything above may still use them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, cast

from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import SanicException

from allinone import objects
from allinone.activator.activator import Activator
from allinone.apiserver import openapi
from allinone.apiserver.auth import protect
from allinone.apiserver.fastpath import InvokeProtocol
from allinone.apiserver.routes import (
    INTERNAL_ERROR,
    ApiDeps,
    ApiError,
    error_response,
    make_blueprint,
)
from allinone.apiserver.status import make_status_blueprint
from allinone.apiserver.triggers import make_trigger_blueprint
from allinone.apiserver.workflows import make_workflows_blueprint
from allinone.autoscaler.loop import Autoscaler
from allinone.budget import PodBudget, limits_for
from allinone.builder.builder import Builder
from allinone.builder.reconciler import BuildReconciler
from allinone.builder.sources import SourceStore
from allinone.clock import SystemClock
from allinone.config import Settings
from allinone.controller.replicaset import ReplicaSetController
from allinone.fdlimit import RECOMMENDED_NOFILE, raise_open_files_limit
from allinone.informer import Informer
from allinone.kubelet.kubelet import Kubelet
from allinone.metrics import Metrics
from allinone.runtime.docker import DockerRuntime
from allinone.services.supervisor import Supervisor
from allinone.store import StoreError, Unavailable
from allinone.store.etcd import EtcdStore
from allinone.triggers.invoker import EngineWorkflows, Targets
from allinone.triggers.runner import TriggerManager
from allinone.ui import Dashboard, make_ui_blueprint
from allinone.usage import ComponentCollector, PodUsage
from allinone.workflows.runner import WorkflowRunner

log = logging.getLogger("allinone")

_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge",
          503: "Unavailable"}


def _on_error(request: Request, exc: Exception) -> HTTPResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, SanicException):
        status = int(exc.status_code)
        message = str(exc)
        if status == 413 and request.path.startswith("/function/"):
            message = (f"invocation body too large: the limit for a request body is "
                       f"{request.app.config.REQUEST_MAX_SIZE} bytes; pass large data by "
                       "reference (a path or URL) instead")
        elif status == 413:
            message = (f"upload too large: the limit is {request.app.ctx.settings.max_upload_bytes}"
                       " bytes; make the function smaller (dependencies belong in "
                       "requirements.txt)")
        elif status == 404:
            message = f"no route {request.method} {request.path}; see the API in the README"
        resp = error_response(status, _CODES.get(status, "Error"), message)
        if status == 405:  # RFC 9110: a 405 names the methods the resource has
            resp.headers["Allow"] = exc.headers.get("Allow") or _allowed(request)
        return resp
    if isinstance(exc, Unavailable):
        return error_response(503, "StoreUnavailable",
                              "etcd does not answer; the server retries, try again shortly")
    if isinstance(exc, StoreError):
        return error_response(503, "StoreError", str(exc))
    log.error("unhandled error on %s %s:\n%s", request.method, request.path,
              "".join(traceback.format_exception(exc)))
    return error_response(500, *INTERNAL_ERROR)


def _allowed(request: Request) -> str:
    """The methods routed for this path (Sanic leaves Allow empty on dynamic paths)."""
    found = []
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        try:
            request.app.router.get(request.path, method, None)
        except SanicException:
            continue
        found.append(method)
    return ", ".join(found)


def build_app(settings: Settings, name: str = "allinone", *,
              supervisor: Supervisor | None = None,
              listener: socket.socket | None = None) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name)
    # Multipart framing adds a little to the file: leave 1 MiB on top of the file limit and
    # let the validator answer 413 with the exact limit for the file itself.
    app.config.REQUEST_MAX_SIZE = settings.max_upload_bytes + 1024 * 1024
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.NOISY_EXCEPTIONS = False
    app.ctx.settings = settings
    protect(app, settings)
    app.blueprint(make_blueprint())
    app.blueprint(make_trigger_blueprint())
    app.blueprint(make_workflows_blueprint())
    app.blueprint(make_status_blueprint())
    app.blueprint(make_ui_blueprint())
    openapi.register(app)
    app.error_handler.add(Exception, _on_error)

    @app.before_server_start
    async def start_components(app: Sanic[Any, Any]) -> None:
        clock = SystemClock()
        metrics = Metrics()
        store = await EtcdStore.connect(settings.etcd_endpoint)
        functions = Informer(store, objects.FUNCTIONS_PREFIX, objects.check_function)
        replicasets = Informer(store, objects.REPLICASETS_PREFIX, objects.check_replicaset)
        activator = Activator(functions, clock, metrics, queue_limit=settings.queue_limit)
        await activator.start()
        budget = PodBudget(limits_for(settings.pod_memory_budget_mib,
                                      settings.max_pods_per_function),
                           store, functions, replicasets)
        autoscaler = Autoscaler(store, functions, replicasets, activator, clock, metrics,
                                tick_seconds=settings.autoscaler_tick_seconds, budget=budget)
        activator.poke = autoscaler.poke
        sources = SourceStore(settings.sources_dir)
        builder = Builder(base_image=settings.base_image, registry=settings.registry_address,
                          work_dir=settings.state_dir / "build")
        reconciler = BuildReconciler(store, functions, builder, sources, metrics,
                                     max_upload=settings.max_upload_bytes,
                                     max_unzipped=settings.max_unzipped_bytes,
                                     logs_dir=settings.logs_dir)
        runtime = DockerRuntime(settings.instance)
        kubelet = Kubelet(store, runtime, activator, clock, settings.pods_dir, settings.logs_dir,
                          keep_paused=settings.keep_paused_seconds, standby=settings.standby)
        activator.retire = kubelet.retire  # a pod whose request timed out is replaced
        kubelet.on_started = lambda function, kind, seconds: metrics.pod_start.labels(
            function, kind).observe(seconds)
        controller = ReplicaSetController(store, replicasets, kubelet, clock)
        app.ctx.workflows = WorkflowRunner(store, activator, clock, metrics)
        triggers = TriggerManager(
            store, clock, Targets(activator, EngineWorkflows(app.ctx.workflows)), metrics)
        metrics.registry.register(ComponentCollector())
        pod_usage = PodUsage(
            lambda: {r.name: (r.function, r.container_id) for r in kubelet.pods.values()
                     if r.phase == "Running" and r.container_id},
            runtime)
        metrics.registry.register(pod_usage.collector())
        app.ctx.dashboard = Dashboard(functions, metrics, autoscaler.status,
                                      activator.ready_pods, clock)
        app.ctx.store = store
        app.ctx.activator = activator
        app.ctx.builder = builder
        app.ctx.runtime = runtime
        app.ctx.controller = controller
        loops: dict[str, Any] = {
            "functions-informer": functions.run(), "replicasets-informer": replicasets.run(),
            "replicaset-controller": controller.run(), "build-reconciler": reconciler.run(),
            "autoscaler": autoscaler.run(), "workflow-runner": app.ctx.workflows.run(),
            "trigger-manager": triggers.run(), "dashboard": app.ctx.dashboard.run(),
        }
        if settings.usage_period_seconds > 0:
            loops["pod-usage"] = pod_usage.run(clock.wall, settings.usage_period_seconds)
        if supervisor is not None:
            loops["supervisor"] = supervisor.run()
            if "registry" in supervisor.children:
                loops["registry-gc"] = registry_gc(supervisor, builder)
        app.ctx.loops = loops
        app.ctx.tasks = {}
        readiness = Readiness(settings, store, supervisor, app.ctx.tasks,
                              [functions, replicasets])
        app.ctx.deps = ApiDeps(
            settings=settings, store=store, sources=sources, functions=functions,
            activator=activator, metrics=metrics, autoscaler_status=autoscaler.status,
            live_logs=kubelet.live_logs, budget=budget, readiness=readiness.check,
            pod_usage=pod_usage.usage, pod_in_flight=activator.pod_in_flight)

    @app.after_server_start
    async def start_loops(app: Sanic[Any, Any]) -> None:
        # Plain asyncio tasks, not Sanic's add_task: Sanic cancels its tasks as soon as
        # a stop signal arrives, and the loops must keep running while requests drain
        # (a held request may be waiting for the pod the controller is starting).
        loop = asyncio.get_running_loop()
        for name, coro in app.ctx.loops.items():
            app.ctx.tasks[name] = loop.create_task(coro, name=f"allinone-{name}")
        app.ctx.tasks["warm-builder"] = loop.create_task(_warm(app.ctx.builder),
                                                         name="allinone-warm-builder")
        log.info("allinone serving on http://%s:%s (instance %s)", settings.host, settings.port,
                 settings.instance)
        limits = app.ctx.deps.budget.limits
        log.info("pod memory budget %d MiB, at most %d pods per function",
                 limits.pod_memory_mib, limits.max_pods_per_function)

    @app.before_server_stop
    async def stop_components(app: Sanic[Any, Any]) -> None:
        # The shutdown order of the module docstring; Sanic itself closes its server
        # only after this hook, so steps 1 and 2 happen here.
        if listener is not None:
            stop_accepting(listener)  # 1
        activator: Activator = app.ctx.activator
        started = time.monotonic()
        left = await activator.drain_all(settings.drain_seconds)  # 2
        if left:
            log.warning("shutdown: %d invocations still in flight after --drain-seconds %g; "
                        "they are cut off", left, settings.drain_seconds)
        else:
            log.info("shutdown: in-flight invocations drained in %.2f s",
                     time.monotonic() - started)
        tasks: dict[str, asyncio.Task[Any]] = app.ctx.tasks  # 3
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await activator.close()  # 4
        await app.ctx.store.close()
        app.ctx.runtime.close()

    return app


# Connections the kernel may hold before the server accepts them (the kernel caps it at
# net.core.somaxconn, 4096 on Debian 12). It must be given to Sanic too (serve()): the
# event loop's create_server(sock=...) calls listen() again with Sanic's own default of
# 100, which silently replaced this one until 2026-11-30. With 100, 2,000 clients
# connecting at once overflowed the accept queue (nstat: ~15,000 ListenOverflows in a
# run); the kernel dropped their handshakes' last ACK, and once the SYN queue held more
# than half the backlog it gave up on those half-open connections after two SYN-ACK
# retries (~7 s); the clients' request retransmissions then met no connection, failed
# the SYN-cookie check (TcpExtSyncookiesFailed) and were answered with a reset: 0.4 %
# of requests, "connection reset by peer" on each connection's first request.
LISTEN_BACKLOG = 4096


def listen(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """The API's listening socket, made here rather than by Sanic so shutdown can close
    it before draining (Sanic closes its server only after ``before_server_stop``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def stop_accepting(sock: socket.socket) -> None:
    """Close the listening socket under the running server: new connections are refused.

    The event loop (uvloop or asyncio) still holds the descriptor number, and closing
    it outright would let the number be reused under the loop; shutdown() instead makes
    uvloop spin on a readable socket. So the number is pointed at a fresh, unconnected
    socket (dup2): the listening socket's last reference goes, the kernel stops
    listening, its epoll registration disappears with it, and the server's own close
    later closes the stand-in.
    """
    if sock.fileno() < 0:
        return
    with socket.socket(sock.family, socket.SOCK_STREAM) as stand_in:
        os.dup2(stand_in.fileno(), sock.fileno())


class Readiness:
    """``GET /readyz``: each component's state; ready when all of them are.

    Components: the embedded children (from the supervisor), etcd as the store sees it,
    the Docker engine (a ping, cached for a second so a probing client cannot turn
    readiness checks into load), the informers' first sync and every loop task alive.
    """

    def __init__(self, settings: Settings, store: EtcdStore, supervisor: Supervisor | None,
                 tasks: dict[str, asyncio.Task[Any]], informers: list[Informer]) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.tasks = tasks
        self.informers = informers
        self._docker: tuple[float, dict[str, Any]] | None = None

    async def _docker_state(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._docker is not None and now - self._docker[0] < 1.0:
            return self._docker[1]
        from allinone.services import preflight

        try:
            await asyncio.wait_for(asyncio.to_thread(preflight.check_docker, 2.0), 3.0)
            state: dict[str, Any] = {"state": "ready"}
        except (preflight.PreflightError, TimeoutError) as exc:
            state = {"state": "down", "message": str(exc) or "no answer within 3 s"}
        self._docker = (now, state)
        return state

    async def check(self) -> tuple[bool, dict[str, Any]]:
        components: dict[str, Any] = {}
        if self.supervisor is not None:
            components.update(self.supervisor.status())
        try:
            await asyncio.wait_for(self.store.revision(), 2.0)
            components["store"] = {"state": "ready", "endpoint": self.store.url}
        except (StoreError, TimeoutError) as exc:
            components["store"] = {"state": "down", "endpoint": self.store.url,
                                   "message": str(exc) or "no answer within 2 s"}
        components["docker"] = await self._docker_state()
        synced = all(i.synced.is_set() for i in self.informers)
        components["informers"] = {"state": "ready" if synced else "starting"}
        loops = {}
        for name, task in self.tasks.items():
            if name == "warm-builder":
                continue  # a one-off, not a loop
            if not task.done():
                loops[name] = "running"
            elif task.cancelled():
                loops[name] = "stopped"
            else:
                loops[name] = f"died: {task.exception()!r}"
        components["loops"] = {
            "state": "ready" if all(v == "running" for v in loops.values()) else "down",
            "tasks": loops}
        ready = all(c.get("state") == "ready" for c in components.values())
        return ready, components


async def registry_gc(supervisor: Supervisor, builder: Builder, idle_seconds: float = 10.0,
                      interval: float = 5.0) -> None:
    """Collect the registry's garbage once manifests were deleted and builds are idle.

    Garbage collection needs the registry stopped (see
    :mod:`allinone.services.registry`), so it waits until no build has run for
    ``idle_seconds``; pods never pull (their images are local), so only a push in that
    second or two would notice, and builds retry infrastructure failures by themselves.
    """
    from allinone.services.registry import RegistryProcess

    registry = cast(RegistryProcess, supervisor.children["registry"])
    collect = registry.garbage_collect
    while True:
        await asyncio.sleep(interval)
        if builder.garbage_pending and builder.idle_for() >= idle_seconds \
                and supervisor.ready("registry"):
            builder.garbage_pending = False
            started = time.monotonic()
            try:
                async with builder.exclusive():
                    await supervisor.maintenance("registry", collect)
            except Exception:
                log.exception("registry garbage collection failed")
                builder.garbage_pending = True
                continue
            log.info("registry garbage collected in %.1f s", time.monotonic() - started)


async def _warm(builder: Builder) -> None:
    try:
        await builder.warm()
    except Exception as exc:  # only an optimisation: the first build pushes the base
        log.warning("could not pre-push the base image: %s", exc)


def supervisor_for(settings: Settings) -> Supervisor:
    """The supervisor of the embedded etcd and registry (those not given as running)."""
    from allinone.services.etcd import EtcdProcess
    from allinone.services.registry import RegistryProcess

    supervisor = Supervisor(run_dir(settings))
    if settings.etcd_url is None:
        supervisor.add(EtcdProcess(settings.state_dir / "etcd", settings.etcd_port,
                                   settings.etcd_port + 1,
                                   log_path=settings.state_dir / "etcd.log"))
    if settings.registry is None:
        supervisor.add(RegistryProcess(settings.state_dir, settings.registry_port))
    return supervisor


def run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def preflight(settings: Settings) -> None:
    """Refuse to start, with one line of reason and fix, when something is missing."""
    from allinone.services import preflight as pf

    pf.check_state_dir(settings.state_dir)
    pf.check_docker()
    pf.check_base_image(settings.base_image)
    pf.check_port_free(settings.host, settings.port, "the API", "--port")
    if settings.etcd_url is None:
        pf.check_port_free("127.0.0.1", settings.etcd_port, "etcd", "--etcd-port")
        pf.check_port_free("127.0.0.1", settings.etcd_port + 1, "etcd's peer port",
                           "--etcd-port")
    if settings.registry is None:
        pf.check_port_free("127.0.0.1", settings.registry_port, "the registry",
                           "--registry-port")


def serve(settings: Settings) -> None:
    """``allinone serve``: the start order of the module docstring."""
    from allinone.services.process import stop_leftovers

    before, nofile = raise_open_files_limit()  # before the children: they inherit it
    if nofile != before:
        log.info("open files limit raised from %d to %d (the hard limit)", before, nofile)
    if nofile < RECOMMENDED_NOFILE:
        log.warning("the open files limit is %d: every client connection and every "
                    "connection to a pod takes one, so some %d concurrent clients exhaust it; "
                    "raise the hard limit to at least %d (ulimit -Hn, systemd LimitNOFILE=)",
                    nofile, nofile // 2, RECOMMENDED_NOFILE)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    for line in stop_leftovers(run_dir(settings)):
        log.warning("stopped %s, left running by an earlier run of this state directory",
                    line)
    preflight(settings)
    supervisor = supervisor_for(settings)
    asyncio.run(supervisor.start_all())
    try:
        listener = listen(settings.host, settings.port)
        app = build_app(settings, supervisor=supervisor, listener=listener)
        # backlog: create_server(sock=...) calls listen() again (see LISTEN_BACKLOG).
        app.run(sock=listener, backlog=LISTEN_BACKLOG, single_process=True,
                access_log=False, motd=False,
                protocol=InvokeProtocol)  # invocations skip Sanic's request cycle
    finally:
        asyncio.run(supervisor.stop_all())
