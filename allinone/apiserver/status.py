"""``GET /api/v1/status``: what ``allinone status`` and the dashboard show about the server.

The components (server, etcd, registry, Docker engine) with their state, version,
address, pid, CPU seconds and RSS; the state directory; the pods by function and phase;
the pod memory budget used. Every probe is bounded (one second) and a component that
does not answer is reported as ``down`` with the reason, never as an error of the whole
answer: status is what one asks when something is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import aiohttp
from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json as json_response

from allinone import __version__, objects
from allinone.apiserver.openapi import doc
from allinone.apiserver.routes import ApiDeps, deps_of
from allinone.budget import committed_mib
from allinone.usage import component_usage

PROBE_SECONDS = 1.0


async def _probe(url: str) -> tuple[str, str, dict[str, Any]]:
    """(state, detail, JSON body or {}) of one GET."""
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
            body: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                body = await r.json(content_type=None)
            if r.status >= 500:
                return "down", f"answers HTTP {r.status}", body
            version = r.headers.get("Docker-Distribution-Api-Version", "")
            return "up", version, body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return "down", f"{type(exc).__name__}: {exc}"[:200], {}


def _docker_version() -> tuple[str, str]:
    import docker
    try:
        client = docker.from_env(timeout=int(PROBE_SECONDS) + 1)
        try:
            return "up", str(client.version().get("Version", ""))
        finally:
            client.close()
    except Exception as exc:  # any failure to reach the engine is "down"
        return "down", str(exc)[:200]


async def status_of(deps: ApiDeps) -> dict[str, Any]:
    settings = deps.settings
    procs = {c["name"]: c for c in await asyncio.to_thread(component_usage)}
    etcd_url, registry_url = settings.etcd_endpoint, f"http://{settings.registry_address}"
    (etcd_state, etcd_detail, etcd_body), (reg_state, reg_detail, _), (dk_state, dk_detail) = (
        await asyncio.gather(_probe(etcd_url + "/version"), _probe(registry_url + "/v2/"),
                             asyncio.to_thread(_docker_version)))
    components = [
        {"name": "server", "state": "up", "version": __version__,
         "address": f"http://{settings.host}:{settings.port}", **_proc(procs, "server")},
        {"name": "etcd", "state": etcd_state,
         "version": etcd_body.get("etcdserver", "") if etcd_state == "up" else "",
         "detail": etcd_detail if etcd_state != "up" else "",
         "address": etcd_url, "embedded": settings.etcd_url is None, **_proc(procs, "etcd")},
        {"name": "registry", "state": reg_state, "version": reg_detail if reg_state == "up"
         else "", "detail": reg_detail if reg_state != "up" else "",
         "address": registry_url, "embedded": settings.registry is None,
         **_proc(procs, "registry")},
        {"name": "docker", "state": dk_state, "version": dk_detail if dk_state == "up" else "",
         "detail": dk_detail if dk_state != "up" else ""},
    ]
    pods: dict[str, Any] = {"total": 0, "byFunction": {}, "byPhase": {}}
    with contextlib.suppress(Exception):  # etcd down: the components say so
        items, _ = await deps.store.list(objects.PODS_PREFIX)
        pods = {"total": len(items),
                "byFunction": dict(Counter(p["spec"].get("function", "") for p in items)),
                "byPhase": dict(Counter(p.get("status", {}).get("phase", "") for p in items))}
    budget: dict[str, Any] = {}
    if deps.budget is not None:
        functions = {f["metadata"]["name"]: f for f in deps.functions.items()}
        used = committed_mib(deps.budget.replicasets.items(), functions, exclude="")
        budget = {"podMemoryMiB": deps.budget.limits.pod_memory_mib, "usedMiB": used,
                  "maxPodsPerFunction": deps.budget.limits.max_pods_per_function}
    return {"version": __version__, "stateDir": str(settings.state_dir),
            "instance": settings.instance, "components": components, "pods": pods,
            "functions": len(deps.functions.items()), "budget": budget}


def _proc(procs: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    p = procs.get(name)
    if p is None:
        return {}
    return {"pid": p["pid"], "cpuSeconds": p["cpuSeconds"], "memoryBytes": p["memoryBytes"]}


def make_status_blueprint() -> Blueprint:
    bp = Blueprint("status")

    @bp.get("/api/v1/status")
    @doc("the server's components, versions, addresses, pods and budget", tag="meta",
         responses={200: ("status", "Status")})
    async def server_status(request: Request) -> HTTPResponse:
        return json_response(await status_of(deps_of(request)))

    return bp
