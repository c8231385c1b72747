"""The one place that wires every component (as faasd's ``cmd/provider.go`` does).

``build_app(settings)`` returns a Sanic app. At ``before_server_start`` it connects to
etcd and builds, in dependency order: informers (Functions, ReplicaSets) -> activator
(data plane) -> autoscaler (reads the activator, writes ReplicaSets) -> build
reconciler (writes templates and Function status) -> ReplicaSet controller (runs pods,
feeds the activator). At ``after_server_start`` the long-running loops start as Sanic
tasks; at ``before_server_stop`` they are cancelled and connections closed. Pods keep
running across a restart of the server and are adopted by the next one.

:func:`serve` is ``allinone serve``: preflight checks, the embedded etcd and registry
as supervised child processes (unless pointed at running ones), then Sanic in a single
process. The child processes are stopped when Sanic returns (SIGINT/SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import SanicException

from allinone import objects
from allinone.activator.activator import Activator
from allinone.apiserver import openapi
from allinone.apiserver.auth import protect
from allinone.apiserver.routes import ApiDeps, ApiError, error_response, make_blueprint
from allinone.apiserver.status import make_status_blueprint
from allinone.apiserver.triggers import make_trigger_blueprint
from allinone.autoscaler.loop import Autoscaler
from allinone.budget import PodBudget, limits_for
from allinone.builder.builder import Builder
from allinone.builder.reconciler import BuildReconciler
from allinone.builder.sources import SourceStore
from allinone.clock import SystemClock
from allinone.config import Settings
from allinone.controller.replicaset import PortAllocator, ReplicaSetController
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.runtime.docker import DockerRuntime
from allinone.store import StoreError, Unavailable
from allinone.store.etcd import EtcdStore
from allinone.triggers.invoker import Targets
from allinone.triggers.runner import TriggerManager
from allinone.ui import Dashboard, make_ui_blueprint
from allinone.usage import ComponentCollector

log = logging.getLogger("allinone")

_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge",
          503: "Unavailable"}


def _on_error(request: Request, exc: Exception) -> HTTPResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, SanicException):
        status = int(exc.status_code)
        message = str(exc)
        if status == 413:
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
    return error_response(500, "InternalError", "the server failed; details are in its log")


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


def build_app(settings: Settings, name: str = "allinone") -> Sanic[Any, Any]:
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
    app.blueprint(make_status_blueprint())
    app.blueprint(make_ui_blueprint())
    openapi.register(app)
    app.error_handler.add(Exception, _on_error)

    @app.before_server_start
    async def start_components(app: Sanic[Any, Any]) -> None:
        clock = SystemClock()
        metrics = Metrics()
        store = await EtcdStore.connect(settings.etcd_endpoint)
        functions = Informer(store, objects.FUNCTIONS_PREFIX)
        replicasets = Informer(store, objects.REPLICASETS_PREFIX)
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
                                     max_unzipped=settings.max_unzipped_bytes)
        runtime = DockerRuntime(settings.instance)
        controller = ReplicaSetController(
            store, runtime, replicasets, activator, clock,
            PortAllocator(*settings.pod_port_range), settings.logs_dir,
            keep_paused=settings.keep_paused_seconds)
        triggers = TriggerManager(store, clock, Targets(activator), metrics)
        metrics.registry.register(ComponentCollector())
        app.ctx.dashboard = Dashboard(functions, metrics, autoscaler.status,
                                      activator.ready_pods, clock)
        app.ctx.store = store
        app.ctx.loops = [functions.run(), replicasets.run(), controller.run(), reconciler.run(),
                         autoscaler.run(), triggers.run(), app.ctx.dashboard.run()]
        app.ctx.activator = activator
        app.ctx.builder = builder
        app.ctx.runtime = runtime
        app.ctx.controller = controller
        app.ctx.deps = ApiDeps(
            settings=settings, store=store, sources=sources, functions=functions,
            activator=activator, metrics=metrics, autoscaler_status=autoscaler.status,
            live_logs=controller.live_logs, budget=budget)

    @app.after_server_start
    async def start_loops(app: Sanic[Any, Any]) -> None:
        for i, coro in enumerate(app.ctx.loops):
            app.add_task(coro, name=f"allinone-loop-{i}")
        app.add_task(_warm(app.ctx.builder), name="allinone-warm-builder")
        log.info("allinone serving on http://%s:%s (instance %s)", settings.host, settings.port,
                 settings.instance)
        limits = app.ctx.deps.budget.limits
        log.info("pod memory budget %d MiB, at most %d pods per function",
                 limits.pod_memory_mib, limits.max_pods_per_function)

    @app.before_server_stop
    async def stop_components(app: Sanic[Any, Any]) -> None:
        for i in range(len(app.ctx.loops)):
            try:
                await app.cancel_task(f"allinone-loop-{i}", raise_exception=False)
            except Exception:  # already finished
                pass
        await app.ctx.activator.close()
        await app.ctx.store.close()
        app.ctx.runtime.close()

    return app


async def _warm(builder: Builder) -> None:
    try:
        await builder.warm()
    except Exception as exc:  # only an optimisation: the first build pushes the base
        log.warning("could not pre-push the base image: %s", exc)


async def _start_embedded(settings: Settings) -> list[Any]:
    """Start etcd and the registry unless the settings point at running ones."""
    from allinone.services.etcd import EtcdProcess
    from allinone.services.registry import RegistryProcess

    children: list[Any] = []
    try:
        if settings.etcd_url is None:
            etcd = EtcdProcess(settings.state_dir / "etcd", settings.etcd_port,
                               settings.etcd_port + 1, log_path=settings.state_dir / "etcd.log")
            await etcd.start()
            children.append(etcd)
        if settings.registry is None:
            registry = RegistryProcess(settings.state_dir, settings.registry_port)
            await registry.start()
            children.append(registry)
    except BaseException:
        await _stop_embedded(children)
        raise
    return children


async def _stop_embedded(children: list[Any]) -> None:
    for child in reversed(children):
        try:
            await child.stop()
        except Exception as exc:  # best effort on the way out
            log.warning("stopping %s failed: %s", type(child).__name__, exc)


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
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    preflight(settings)
    children = asyncio.run(_start_embedded(settings))
    try:
        app = build_app(settings)
        app.run(host=settings.host, port=settings.port, single_process=True,
                access_log=False, motd=False)
    finally:
        asyncio.run(_stop_embedded(children))
