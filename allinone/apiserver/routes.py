"""The HTTP API (DESIGN.md's contract): parse, validate, write to the store.

The apiserver never calls Docker: it validates input completely before anything is
stored, writes objects, and lets the reconcilers act on them through their watches.
Order of a create, so a failure leaves nothing behind:

1. validate the name, the spec and the source (syntax, handler, zip safety, size);
2. store the source archive (content-addressed, so a retry writes the same file);
3. create the Function (409 when the name is taken; the archive is then removed unless
   another function shares it), then its ReplicaSet.

Every error answers ``{"error": {"code": ..., "message": ...}}``; the message says
what was wrong and what to do. Stack traces go to the server log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sanic import Blueprint, HTTPResponse, Request
from sanic.headers import parse_content_header
from sanic.request import RequestParameters, parse_multipart_form
from sanic.response import json as json_response
from sanic.response import raw, text

from allinone import objects
from allinone.activator.activator import Activator, Result
from allinone.apiserver.openapi import NAME, doc, json_body, query_param
from allinone.budget import PodBudget
from allinone.builder.sources import SourceStore
from allinone.builder.validate import TooLarge, validate_source
from allinone.config import Settings
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.objects import ValidationError
from allinone.store import AlreadyExists, Conflict, NotFound, Obj, Store

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> HTTPResponse:
    return json_response({"error": {"code": code, "message": message}}, status=status)


# The 500 of an unexpected exception (code, message); the trace goes to the log only.
INTERNAL_ERROR = ("InternalError", "the server failed; details are in its log")


def invoke_function(activator: Activator, name: str, body: bytes) -> Awaitable[Result]:
    """One call of the HTTP trigger, as both the route and the fast path
    (:mod:`.fastpath`) make it: an empty body means no arguments. (Not a coroutine
    itself: one frame less on the request path.)"""
    return activator.invoke(name, body or b"{}")


@dataclass
class ApiDeps:
    settings: Settings
    store: Store
    sources: SourceStore
    functions: Informer
    activator: Activator
    metrics: Metrics
    # function name -> autoscaler view (desired, stable/panic concurrency, panic)
    autoscaler_status: Callable[[str], dict[str, Any]]
    # function name -> what its live pods printed
    live_logs: Callable[[str], Awaitable[str]]
    # (ready, state of each component), for GET /readyz
    readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]] | None = None
    # Admission limits (pod memory budget, pods per function); None: no limits.
    budget: PodBudget | None = None
    # pod name -> its last CPU/memory sample (allinone/usage.py), shown as status.usage
    pod_usage: Callable[[str], dict[str, Any] | None] | None = None
    # (function, pod) -> requests on that pod now (the activator's count), status.inFlight
    pod_in_flight: Callable[[str, str], int] | None = None


def _form(request: Request) -> tuple[RequestParameters, RequestParameters]:
    """The request's form fields and files, parsed once, here.

    Sanic's own parsing (``request.form``) logs a traceback for a malformed multipart
    body and hands back an empty form, so the caller would be told "no name" or "no
    source" instead of what is wrong. A malformed body is a 400 saying so.
    """
    if request.parsed_form is not None and request.parsed_files is not None:
        return request.parsed_form, request.parsed_files
    content_type, params = parse_content_header(request.headers.get("content-type", ""))
    if content_type != "multipart/form-data":  # urlencoded fields, or no form at all
        return request.form or RequestParameters(), request.files or RequestParameters()
    boundary = params.get("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ApiError(400, "BadRequest", "the multipart/form-data body has no boundary "
                       "in its Content-Type header; let the client build the form "
                       "(curl -F, requests' files=) rather than setting the header by hand")
    try:
        form, files = parse_multipart_form(  # type: ignore[no-untyped-call]
            request.body, boundary.encode("utf-8"))
    except Exception as exc:  # the parser fails in many shapes on hostile input
        raise ApiError(400, "BadRequest", "the multipart/form-data body is malformed "
                       f"({type(exc).__name__}: {exc}); each part needs a "
                       "Content-Disposition header with a name") from None
    request.parsed_form, request.parsed_files = form, files
    return form, files


def _source_from(request: Request) -> tuple[str, bytes] | None:
    files = _form(request)[1].getlist("source")
    if not files:
        return None
    f = files[0]
    return f.name or "", f.body


def _spec_from(request: Request) -> Any:
    raw_spec = _form(request)[0].get("spec")
    if raw_spec in (None, ""):
        return None
    try:
        return json.loads(raw_spec)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "BadSpec", f"spec is not valid JSON ({exc.msg} at position "
                       f"{exc.pos}); pass a JSON object such as '{{\"timeoutSeconds\": 30}}'"
                       ) from exc


async def _validated(deps: ApiDeps, filename: str, data: bytes, handler: str) -> Obj:
    # In a thread: inflating a zip of up to 200 MiB must not stall the data plane.
    try:
        v = await asyncio.to_thread(
            validate_source, filename, data, handler,
            max_upload=deps.settings.max_upload_bytes,
            max_unzipped=deps.settings.max_unzipped_bytes)
    except TooLarge as exc:
        raise ApiError(413, "TooLarge", str(exc)) from exc
    except ValidationError as exc:
        raise ApiError(400, "BadSource", str(exc)) from exc
    return {"filename": v.filename, "sha256": v.sha256, "size": v.size}


# The request bodies of the routes below (their contract, allinone/apiserver/openapi.py).
_SOURCE_FORM = {
    "name": {**NAME, "description": "the function's name (DNS-1123 label)"},
    "source": {"type": "string", "format": "binary", "description": "a .py file or a .zip"},
    "spec": {"type": "string", "description": "the spec as JSON text (optional)"},
}
FUNCTION_UPLOAD = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name", "source"], "properties": _SOURCE_FORM}}}}
FUNCTION_UPDATE = {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "anyOf": [{"required": ["source"]}, {"required": ["spec"]}],
        "properties": {k: v for k, v in _SOURCE_FORM.items() if k != "name"}}},
    "application/json": {"schema": {"type": "object", "required": ["spec"],
                                    "properties": {"spec": {
                                        "$ref": "#/components/schemas/FunctionSpecInput"}}}}}}
INVOKE_BODY = json_body({"type": "object", "description": "the handler's keyword arguments"})


def _name_of(obj: Any) -> Any:
    """An object's name, None for a malformed one (listed marks it Invalid)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta.get("name") if isinstance(meta, dict) else None


def deps_of(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.ctx.deps
    return deps


def make_blueprint() -> Blueprint:
    """The API routes; each reads its dependencies from ``app.ctx.deps`` (set at start)."""
    bp = Blueprint("api")

    async def get_function(deps: ApiDeps, name: str) -> Obj:
        try:
            return await deps.store.get(objects.function_key(name))
        except NotFound:
            raise ApiError(404, "NotFound", f"no function named {name!r}; "
                           "`allinone function list` shows what is deployed") from None

    async def replicaset_of(deps: ApiDeps, name: str) -> Obj | None:
        try:
            return await deps.store.get(objects.replicaset_key(name))
        except NotFound:
            return None

    def view(deps: ApiDeps, fn: Obj, rs: Obj | None) -> Obj:
        """The Function as shown to users: replica counts (from its ReplicaSet ``rs``,
        None when it has none) and autoscaler state merged in.

        Only ``status`` is copied (shallowly) before it is filled in: the store hands out
        freshly decoded objects, and a deep copy per function was most of the time a list
        of 40 took on a busy machine."""
        out = {**fn, "status": dict(fn["status"])}
        name = fn["metadata"]["name"]
        if rs is not None:
            out["status"]["replicas"] = rs.get("status", {}).get("replicas", 0)
            out["status"]["readyReplicas"] = deps.activator.ready_pods(name)
            out["status"]["desiredReplicas"] = rs["spec"].get("replicas", 0)
        out["status"]["autoscaler"] = deps.autoscaler_status(name)
        return out

    def listed(deps: ApiDeps, fn: Obj, rs: Obj | None) -> Obj:
        """One item of a list: the view, or the object marked Invalid when malformed."""
        try:
            objects.check_function(fn)
            return view(deps, fn, rs)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            out = copy.deepcopy(fn)
            out["status"] = {"phase": "Invalid",
                             "message": f"the stored object is malformed ({exc}); delete it "
                                        "and deploy the function again"}
            return out

    def source_in_use(deps: ApiDeps, sha: str, except_name: str | None = None) -> bool:
        return any(f["spec"]["source"]["sha256"] == sha for f in deps.functions.items()
                   if f["metadata"]["name"] != except_name)

    @bp.post("/api/v1/functions")
    @doc("deploy a function: upload its source, build it, serve it", tag="functions",
         body=FUNCTION_UPLOAD, responses={
             201: ("created; building", "Function"), 400: ("bad name, spec or source", None),
             409: ("a function of that name exists", None), 413: ("source too large", None)})
    async def create_function(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        name = _form(request)[0].get("name") or ""
        try:
            objects.validate_name(name)
            user_spec = _spec_from(request)
            spec = objects.normalize_spec(user_spec)
            if deps.budget is not None:
                spec = deps.budget.admit(name, spec, user_spec)
        except ValidationError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc
        src = _source_from(request)
        if src is None:
            raise ApiError(400, "BadSource", "no source: upload the function as a multipart file "
                           "field named 'source' (a .py file or a .zip)")
        filename, data = src
        spec["source"] = await _validated(deps, filename, data, spec["handler"])
        had_source = deps.sources.has(spec["source"]["sha256"])
        deps.sources.put(data)
        fn = objects.new_object("Function", name, spec)
        fn["status"] = {"phase": objects.BUILDING, "message": "", "observedGeneration": 0}
        try:
            created = await store.create(objects.function_key(name), fn)
        except AlreadyExists:
            if not had_source and not source_in_use(deps, spec["source"]["sha256"]):
                deps.sources.delete(spec["source"]["sha256"])
            raise ApiError(409, "AlreadyExists", f"function {name!r} already exists; update it "
                           "with PUT (`allinone function deploy --update`) or delete it") from None
        rs_key = objects.replicaset_key(name)
        rs = objects.replicaset_for(created)
        if deps.budget is not None:  # initialScale, as far as it fits next to the others
            rs["spec"]["replicas"] = deps.budget.initial_replicas(name, spec)
        try:
            await store.create(rs_key, rs)
        except AlreadyExists:
            # A ReplicaSet left over from a function deleted mid-way: replace it.
            old = await store.get(rs_key)
            rs["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            await store.update(rs_key, rs)
        return json_response(view(deps, created, rs), status=201)

    @bp.get("/api/v1/functions")
    @doc("list functions", tag="functions", responses={200: ("all functions", "FunctionList")})
    async def list_functions(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        # Two range reads, not one ReplicaSet read per function: the dashboard's first
        # paint waits on this list.
        items, _ = await store.list(objects.FUNCTIONS_PREFIX)
        rss, _ = await store.list(objects.REPLICASETS_PREFIX)
        by_name = {_name_of(rs): rs for rs in rss}
        return json_response({"items": [listed(deps, f, by_name.get(_name_of(f)))
                                         for f in items]})

    @bp.get("/api/v1/functions/<name>")
    @doc("read a function", tag="functions",
         responses={200: ("the function", "Function"), 404: ("no such function", None)})
    async def read_function(request: Request, name: str) -> HTTPResponse:
        deps = deps_of(request)
        return json_response(listed(deps, await get_function(deps, name),
                                    await replicaset_of(deps, name)))

    @bp.put("/api/v1/functions/<name>")
    @doc("update a function's source and/or spec (a new generation, rolled out)",
         tag="functions", body=FUNCTION_UPDATE, responses={
             200: ("updated (or unchanged)", "Function"), 400: ("bad spec or source", None),
             404: ("no such function", None), 409: ("kept changing; retry", None),
             413: ("source too large", None)})
    async def update_function(request: Request, name: str) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        if request.content_type.startswith("application/json"):
            body = request.json if request.body else None
            if not isinstance(body, dict) or "spec" not in body:
                raise ApiError(400, "BadRequest", 'a JSON PUT needs a body {"spec": {...}}; '
                               "to change the source, send multipart with a 'source' file")
            user_spec, src = body["spec"], None
        else:
            user_spec, src = _spec_from(request), _source_from(request)
        if user_spec is None and src is None:
            raise ApiError(400, "BadRequest", "nothing to update: send a new 'source' file "
                           "and/or a 'spec'")
        for _ in range(5):
            fn = await get_function(deps, name)
            current = {k: v for k, v in fn["spec"].items() if k != "source"}
            try:
                spec = objects.normalize_spec(user_spec, base=current)
                if deps.budget is not None:
                    spec = deps.budget.admit(name, spec, user_spec)
            except ValidationError as exc:
                raise ApiError(400, "BadRequest", str(exc)) from exc
            if src is not None:
                spec["source"] = await _validated(deps, src[0], src[1], spec["handler"])
                deps.sources.put(src[1])
            else:
                spec["source"] = fn["spec"]["source"]
                if spec["handler"] != fn["spec"].get("handler"):
                    # A new handler must exist in the stored source: check now, not at build.
                    data = deps.sources.get(spec["source"]["sha256"])
                    await _validated(deps, spec["source"]["filename"], data, spec["handler"])
            if spec == fn["spec"] and fn["status"].get("phase") != objects.FAILED:
                # nothing changed: no new generation
                return json_response(view(deps, fn, await replicaset_of(deps, name)))
            # (A Failed function deployed again with the same source is built again: the
            # failure may have been the platform's, and the user asks for a retry.)
            new = copy.deepcopy(fn)
            new["spec"] = spec
            new["metadata"]["generation"] = fn["metadata"]["generation"] + 1
            new["status"]["phase"] = objects.BUILDING
            new["status"]["message"] = ""
            try:
                updated = await store.update(objects.function_key(name), new)
            except Conflict:
                continue
            old_sha = fn["spec"]["source"]["sha256"]
            if old_sha != spec["source"]["sha256"] and not source_in_use(deps, old_sha, name):
                deps.sources.delete(old_sha)
            return json_response(view(deps, updated, await replicaset_of(deps, name)))
        raise ApiError(409, "Conflict", f"function {name!r} kept changing; retry the update")

    @bp.delete("/api/v1/functions/<name>")
    @doc("delete a function, its ReplicaSet, pods and image tag", tag="functions",
         responses={200: ("deleted", "FunctionDeleted"), 404: ("no such function", None)})
    async def delete_function(request: Request, name: str) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        fn = await get_function(deps, name)
        # The ReplicaSet first: the controller drains and removes the pods, then the
        # Function, whose deletion makes the builder remove the image tags.
        with contextlib.suppress(NotFound):
            await store.delete(objects.replicaset_key(name))
        with contextlib.suppress(NotFound):
            await store.delete(objects.function_key(name))
        return json_response({"deleted": name, "function": fn})

    @bp.get("/api/v1/functions/<name>/logs")
    @doc("what the function printed (saved logs, then its live pods')", tag="functions",
         responses={200: ("the log text", {"text/plain": {"type": "string"}}),
                    404: ("no such function", None)})
    async def function_logs(request: Request, name: str) -> HTTPResponse:
        deps = deps_of(request)
        await get_function(deps, name)
        saved = ""
        path = deps.settings.logs_dir / f"{name}.log"
        if path.exists():
            saved = path.read_text(encoding="utf-8", errors="replace")
        return text(saved + await deps.live_logs(name))

    @bp.get("/api/v1/namespaces/serverless/replicasets")
    @doc("list ReplicaSets", tag="replicasets",
         responses={200: ("all ReplicaSets", "ReplicaSetList")})
    async def list_replicasets(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        items, _ = await store.list(objects.REPLICASETS_PREFIX)
        return json_response({"items": items})

    @bp.get("/api/v1/namespaces/serverless/replicasets/<name>")
    @doc("read a ReplicaSet", tag="replicasets",
         responses={200: ("the ReplicaSet", "ReplicaSet"), 404: ("no such ReplicaSet", None)})
    async def read_replicaset(request: Request, name: str) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        try:
            return json_response(await store.get(objects.replicaset_key(name)))
        except NotFound:
            raise ApiError(404, "NotFound", f"no ReplicaSet named {name!r}") from None

    @bp.get("/api/v1/namespaces/serverless/pods")
    @doc("list pods", tag="pods", query=[query_param(
             "function", {"type": "string"}, "only this function's pods")],
         responses={200: ("the pods", "PodList")})
    async def list_pods(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        store = deps.store
        items, _ = await store.list(objects.PODS_PREFIX)
        function = request.args.get("function")
        if function:
            items = [p for p in items if p["spec"].get("function") == function]
        for p in items:
            status = p.setdefault("status", {})
            if deps.pod_in_flight is not None:
                status["inFlight"] = deps.pod_in_flight(p["spec"].get("function", ""),
                                                        p["metadata"]["name"])
            if deps.pod_usage is not None:
                usage = deps.pod_usage(p["metadata"]["name"])
                if usage is not None:
                    status["usage"] = usage
        return json_response({"items": items})

    @bp.post("/function/<name>")
    @doc("invoke a function: the JSON object body is passed as keyword arguments",
         tag="invocation", body=INVOKE_BODY, responses={
             200: ("the function's return value", "AnyJson"),
             400: ("the body is not a JSON object, or the arguments do not fit", None),
             404: ("no such function", None), 500: ("the function raised", None),
             503: ("not ready, or overloaded", None), 504: ("timed out", None)})
    async def invoke(request: Request, name: str) -> HTTPResponse:
        result = await invoke_function(deps_of(request).activator, name, request.body)
        return raw(result.body, status=result.status, content_type="application/json")

    @bp.get("/healthz")
    @doc("liveness", tag="meta", responses={200: ("alive", "Health")})
    async def healthz(request: Request) -> HTTPResponse:
        return json_response({"status": "ok"})

    @bp.get("/readyz")
    @doc("readiness: every component and loop, with what is wrong", tag="meta",
         responses={200: ("ready", "Readiness"), 503: ("not ready", "Readiness")})
    async def readyz(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        if deps.readiness is None:
            return json_response({"status": "ready", "components": {}})
        ready, components = await deps.readiness()
        return json_response({"status": "ready" if ready else "not ready",
                              "components": components}, status=200 if ready else 503)

    @bp.get("/metrics")
    @doc("Prometheus metrics", tag="meta",
         responses={200: ("Prometheus text format", {"text/plain": {"type": "string"}})})
    async def metrics(request: Request) -> HTTPResponse:
        deps = deps_of(request)
        return raw(deps.metrics.render(), content_type="text/plain; version=0.0.4")

    return bp
