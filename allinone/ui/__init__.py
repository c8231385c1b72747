"""The dashboard: ``GET /ui`` and the two read-only API routes it polls.

- ``GET /ui`` is one static page (``static/index.html``) with its script and style
  (``static/app.js``, ``static/style.css``), shipped inside the package: no build step,
  no CDN. The curves are drawn by uPlot, vendored under ``static/vendor/uplot/`` (its
  README says the version and source commit) and served from the same route. Only the
  files in :data:`ASSETS` are served, each with its content type; nothing is read from a
  path the client names (the name is looked up in that table, never joined as given).
  Every file in :data:`ASSETS` must match the package-data globs in ``pyproject.toml``
  (a unit test checks it), or a non-editable install would miss it.
- ``GET /api/v1/stats`` is every function's latest point (phase and image come from
  the functions API, which the page reads too); ``GET /api/v1/stats/functions/NAME`` is
  one function's history for the curves. Both come from :class:`Dashboard`, which
  records a point per function every 2 s (:mod:`allinone.ui.history`).

The page polls (every 2 s); the management API's token, when the server requires one,
is asked once and kept in the browser's session storage.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry
from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json as json_response
from sanic.response import raw

from allinone.apiserver.openapi import doc
from allinone.apiserver.routes import ApiError
from allinone.clock import Clock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.ui.history import PERIOD_SECONDS, History, Reading, read_counters

# Path under static/ -> content type. The page loads uPlot before app.js (index.html).
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "vendor/uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uplot/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/uplot/LICENSE": "text/plain; charset=utf-8",
}


def _asset(name: str) -> bytes:
    """The bytes of ``static/NAME``, NAME a key of :data:`ASSETS` (``/``-separated)."""
    path = resources.files("allinone.ui") / "static"
    for part in name.split("/"):
        path = path / part
    return path.read_bytes()


class Dashboard:
    """Records each function's point every period (while the server runs)."""

    def __init__(self, functions: Informer, metrics: Metrics,
                 autoscaler_status: Callable[[str], dict[str, Any]],
                 ready_pods: Callable[[str], int], clock: Clock,
                 period: float = PERIOD_SECONDS) -> None:
        self.functions = functions
        self.metrics = metrics
        self.autoscaler_status = autoscaler_status
        self.ready_pods = ready_pods
        self.clock = clock
        self.period = period
        self.history = History()
        # Only the three families a point needs: the full registry's collect() also runs
        # the process and pod collectors (a walk of /proc) every period, which was most of
        # an idle server's CPU.
        self._counters = CollectorRegistry(auto_describe=False)
        for family in (metrics.invocations, metrics.cold_starts, metrics.latency):
            self._counters.register(family)

    def tick(self) -> None:
        names = [f["metadata"]["name"] for f in self.functions.items()]
        counters = read_counters(self._counters, names)
        readings = {}
        for name in names:
            a = self.autoscaler_status(name)
            readings[name] = Reading(
                desired=a.get("desired"), ready=self.ready_pods(name),
                stable=float(a.get("stableConcurrency") or 0.0),
                panic=float(a.get("panicConcurrency") or 0.0),
                panic_mode=bool(a.get("panic")), counters=counters[name])
        self.history.record(self.clock.wall(), readings)

    async def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # crash-only: a bad tick is followed by the next one
                pass
            await self.clock.sleep(self.period)


def dashboard_of(request: Request) -> Dashboard:
    d: Dashboard = request.app.ctx.dashboard
    return d


def make_ui_blueprint() -> Blueprint:
    bp = Blueprint("ui")

    @bp.get("/ui")
    @doc(hidden=True)
    async def ui_page(request: Request) -> HTTPResponse:
        return raw(_asset("index.html"), content_type=ASSETS["index.html"],
                   headers={"Cache-Control": "no-cache"})

    @bp.get("/ui/static/<name:path>")
    @doc(hidden=True)
    async def ui_asset(request: Request, name: str) -> HTTPResponse:
        if name not in ASSETS:
            raise ApiError(404, "NotFound", f"no dashboard file {name!r}")
        return raw(_asset(name), content_type=ASSETS[name],
                   headers={"Cache-Control": "no-cache"})

    @bp.get("/api/v1/stats")
    @doc("every function's latest dashboard point (rps, p50/p95 ms, pods, concurrency)",
         tag="stats", responses={200: ("latest points by function", "StatsLatest")})
    async def stats_latest(request: Request) -> HTTPResponse:
        return json_response({"functions": dashboard_of(request).history.latest()})

    @bp.get("/api/v1/stats/functions/<name>")
    @doc("one function's recent history (a point every 2 s, last 5 minutes)", tag="stats",
         responses={200: ("points, oldest first", "StatsSeries"),
                    404: ("no history for this function (not deployed)", None)})
    async def stats_series(request: Request, name: str) -> HTTPResponse:
        series = dashboard_of(request).history.series(name)
        if series is None:
            raise ApiError(404, "NotFound", f"no history for function {name!r}: it is not "
                           "deployed, or was deployed in the last 2 s")
        return json_response({"name": name, "points": series})

    return bp
