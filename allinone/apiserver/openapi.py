"""The API contract: an OpenAPI 3.0 document built from the routes themselves.

Each fact once: a route's method and path come from Sanic's router (the decorator that
registers it); what it takes and answers comes from a :func:`doc` decorator on the same
handler, right next to it. :func:`build_spec` walks the app's routes and joins the two,
so a route can not be served under one path and documented under another. A route
without ``@doc`` is listed by :func:`undocumented` (a unit test keeps that list empty);
``@doc(hidden=True)`` marks the few routes that are not part of the API (the
dashboard's files).

The served document (``GET /openapi.json``) is built once per app and cached. The
repository keeps a copy, ``allinone/apiserver/openapi.json``, as the reviewed contract:
a unit test fails when the code's document and the copy differ, and
``python -m allinone.apiserver.openapi > allinone/apiserver/openapi.json`` regenerates it.
So every change of the contract shows up as a diff of that file.

Schemas are deliberately open (``additionalProperties`` allowed on objects, except the
error body): a client may rely on the fields listed, and the server may add fields
without breaking it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sanic import HTTPResponse, Request, Sanic
from sanic.response import json as json_response

F = TypeVar("F", bound=Callable[..., Any])

TITLE = "allinone"
# 3.0: what most client generators and fuzzers read fully (nullable, not type lists).
OPENAPI_VERSION = "3.0.3"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An object's name (DNS-1123 label, objects.validate_name): in paths, forms and bodies.
NAME = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 63}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "integer"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _object(kind: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": ["allinone/v1"]},
            "kind": {"type": "string", "enum": [kind]},
            "metadata": _ref("ObjectMeta"),
            "spec": spec,
            "status": status,
        },
    }


def _items(of: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": _ref(of)}}}


_NUMBER_OR_NULL = {"type": "number", "nullable": True}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. NotFound"},
                "message": {"type": "string", "description": "what was wrong, what to do"},
            },
        }},
    },
    "ObjectMeta": _METADATA,
    "FunctionSpecInput": {
        "type": "object",
        "description": "Any subset of a Function's spec; omitted fields take their defaults "
                       "(the README lists them and their ranges).",
        "properties": {
            "handler": {"type": "string"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeoutSeconds": {"type": "number"},
            "resources": {"type": "object", "properties": {
                "memoryMiB": {"type": "integer"}, "cpus": {"type": "number"}}},
            "scaling": {"type": "object"},
        },
    },
    "Function": _object(
        "Function",
        {"type": "object", "required": ["handler", "source", "scaling"], "properties": {
            "handler": {"type": "string"},
            "source": {"type": "object", "required": ["filename", "sha256", "size"],
                       "properties": {"filename": {"type": "string"},
                                      "sha256": {"type": "string"},
                                      "size": {"type": "integer"}}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeoutSeconds": {"type": "number"},
            "resources": {"type": "object"},
            "scaling": {"type": "object"},
        }},
        {"type": "object", "properties": {
            "phase": {"type": "string", "enum": ["Building", "Ready", "Failed"]},
            "image": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "replicas": {"type": "integer"},
            "readyReplicas": {"type": "integer"},
            "desiredReplicas": {"type": "integer"},
            "autoscaler": {"type": "object", "description": "the KPA's view: desired, "
                           "stable and panic concurrency, panic mode"},
        }},
    ),
    "FunctionList": _items("Function"),
    "FunctionDeleted": {"type": "object", "required": ["deleted", "function"], "properties": {
        "deleted": {"type": "string"}, "function": _ref("Function")}},
    "ReplicaSet": _object(
        "ReplicaSet",
        {"type": "object", "required": ["replicas"], "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "template": {"type": "object"}}},
        {"type": "object", "properties": {
            "replicas": {"type": "integer"}, "readyReplicas": {"type": "integer"}}},
    ),
    "ReplicaSetList": _items("ReplicaSet"),
    "Pod": _object(
        "Pod",
        {"type": "object", "properties": {"function": {"type": "string"}}},
        {"type": "object", "properties": {
            "phase": {"type": "string"},
            "restartCount": {"type": "integer", "minimum": 0, "description":
                             "pods of the function that failed in a row before this one "
                             "(a crashed pod is replaced, not restarted in place)"},
            "inFlight": {"type": "integer", "minimum": 0,
                         "description": "requests on this pod now (the activator's count)"},
            "usage": _ref("PodUsage"),
        }},
    ),
    "PodUsage": {
        "type": "object",
        "description": "the pod's last resource sample (psutil on its processes)",
        "required": ["cpuPercent", "cpuSeconds", "memoryBytes", "sampledAt"],
        "properties": {
            "cpuPercent": {"type": "number", "description": "percent of one core"},
            "cpuSeconds": {"type": "number", "description": "cumulative CPU time"},
            "memoryBytes": {"type": "integer"},
            "sampledAt": {"type": "string", "description": "RFC 3339"},
        },
    },
    "PodList": _items("Pod"),
    "TriggerSpecInput": {
        "type": "object",
        "description": "one target and exactly one source: schedule (cron or '@every 10s') "
                       "or watch ({\"path\": ...}); the README lists every field",
        "required": ["target"],
        "properties": {
            "target": {"oneOf": [
                {"type": "object", "required": ["function"], "additionalProperties": False,
                 "properties": {"function": NAME}},
                {"type": "object", "required": ["workflow"], "additionalProperties": False,
                 "properties": {"workflow": NAME}}]},
            "schedule": {"type": "string"},
            "timezone": {"type": "string"},
            "watch": {"type": "object", "required": ["path"],
                      "properties": {"path": {"type": "string"}}},
        },
        "oneOf": [{"required": ["schedule"]}, {"required": ["watch"]}],
    },
    "TriggerInput": {
        "type": "object",
        "required": ["name", "spec"],
        "properties": {"name": NAME, "spec": _ref("TriggerSpecInput")},
    },
    "TriggerUpdate": {"type": "object", "required": ["spec"],
                      "properties": {"spec": _ref("TriggerSpecInput")}},
    "Trigger": _object(
        "Trigger",
        {"type": "object", "required": ["target"], "properties": {
            "target": {"type": "object"},
            "schedule": {"type": "string"},
            "timezone": {"type": "string"},
            "watch": {"type": "object"},
        }},
        {"type": "object", "properties": {
            "fires": {"type": "integer"}, "failures": {"type": "integer"},
            "missed": {"type": "integer"}}},
    ),
    "TriggerList": _items("Trigger"),
    "TriggerDeleted": {"type": "object", "required": ["deleted", "trigger"], "properties": {
        "deleted": {"type": "string"}, "trigger": _ref("Trigger")}},
    "TriggerEvent": {
        "type": "object",
        "required": ["id", "status", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "time": {"type": "string", "nullable": True},
            "input": {"type": "object"},
            "status": {"type": "string", "nullable": True},
            "attempts": {"type": "integer"},
            "httpStatus": {"type": "integer", "nullable": True},
            "latencySeconds": _NUMBER_OR_NULL,
            "error": {"type": "string", "nullable": True},
            "sink": {"type": "object"},
        },
    },
    "TriggerEventList": _items("TriggerEvent"),
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}}},
    "Status": {
        "type": "object",
        "required": ["version", "stateDir", "components", "pods"],
        "properties": {
            "version": {"type": "string"},
            "stateDir": {"type": "string"},
            "components": {"type": "array", "items": {"type": "object"}},
            "pods": {"type": "object"},
            "budget": {"type": "object"},
        },
    },
    "StatsPoint": {
        "type": "object",
        "required": ["t", "ready", "rps", "requests", "coldStarts"],
        "properties": {
            "t": {"type": "number", "description": "Unix time of the point"},
            "desired": {"type": "integer", "nullable": True},
            "ready": {"type": "integer"},
            "stable": {"type": "number"}, "panic": {"type": "number"},
            "panicMode": {"type": "boolean"},
            "rps": {"type": "number"},
            "p50": {"type": "number", "nullable": True, "description": "milliseconds"},
            "p95": {"type": "number", "nullable": True, "description": "milliseconds"},
            "requests": {"type": "integer"}, "coldStarts": {"type": "integer"},
        },
    },
    "StatsLatest": {"type": "object", "required": ["functions"], "properties": {
        "functions": {"type": "object", "additionalProperties": _ref("StatsPoint")}}},
    "StatsSeries": {"type": "object", "required": ["name", "points"], "properties": {
        "name": {"type": "string"},
        "points": {"type": "array", "items": _ref("StatsPoint")}}},
    "Readiness": {"type": "object", "required": ["status", "components"], "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "components": {"type": "object"}}},
    "WorkflowInput": {"type": "object", "required": ["name", "definition"], "properties": {
        "name": NAME, "definition": _ref("StateMachine")}},
    "WorkflowUpdate": {"type": "object", "required": ["definition"], "properties": {
        "definition": _ref("StateMachine")}},
    "StateMachine": {
        "type": "object", "required": ["StartAt", "States"],
        "description": "Amazon States Language; the README lists the supported states",
        "properties": {"StartAt": {"type": "string"}, "States": {"type": "object"},
                       "Comment": {"type": "string"}, "TimeoutSeconds": {"type": "integer"}},
    },
    "Workflow": _object(
        "Workflow",
        {"type": "object", "required": ["definition"],
         "properties": {"definition": _ref("StateMachine")}},
        {"type": "object", "properties": {"phase": {"type": "string"},
                                          "message": {"type": "string"}}},
    ),
    "WorkflowList": _items("Workflow"),
    "WorkflowDeleted": {"type": "object", "required": ["deleted", "workflow"], "properties": {
        "deleted": {"type": "string"}, "workflow": _ref("Workflow")}},
    "Execution": {
        "type": "object",
        "required": ["executionId", "workflow", "status"],
        "properties": {
            "executionId": {"type": "string"},
            "workflow": {"type": "string"},
            "status": {"type": "string",
                       "enum": ["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]},
            "input": {},
            "output": {},
            "error": {"type": "string", "nullable": True},
            "cause": {"type": "string", "nullable": True},
            "startDate": {"type": "string", "nullable": True},
            "stopDate": {"type": "string", "nullable": True},
            "historyTruncated": {"type": "boolean"},
            "events": {"type": "array", "items": {
                "type": "object", "required": ["type"],
                "properties": {"type": {"type": "string"}, "timestamp": {"type": "string"},
                               "name": {"type": "string"}}}},
        },
    },
    "ExecutionList": {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": _ref("Execution")},
        "continue": {"type": "string"}}},
    "ExecutionOutcome": {"type": "object", "required": ["executionId", "status"], "properties": {
        "executionId": {"type": "string"}, "status": {"type": "string"}, "output": {},
        "error": {"type": "string", "nullable": True},
        "cause": {"type": "string", "nullable": True}}},
    "ExecutionStarted": {"type": "object", "required": ["executionId"], "properties": {
        "executionId": {"type": "string"}}},
    "AnyJson": {"description": "the function's return value, as JSON"},
}


@dataclass
class Doc:
    """What one route takes and answers (its method and path come from the router)."""

    summary: str
    responses: dict[int, tuple[str, Any]]
    tag: str = ""
    body: dict[str, Any] | None = None
    query: list[dict[str, Any]] = field(default_factory=list)
    hidden: bool = False
    # path parameter -> schema; an object name (NAME) when not given
    path: dict[str, Any] = field(default_factory=dict)


def doc(summary: str = "", *, responses: dict[int, tuple[str, Any]] | None = None,
        tag: str = "", body: dict[str, Any] | None = None,
        query: list[dict[str, Any]] | None = None, hidden: bool = False,
        path: dict[str, Any] | None = None) -> Callable[[F], F]:
    """Attach a route's contract to its handler.

    ``responses`` maps a status to ``(description, schema)``: a schema name from
    :data:`SCHEMAS`, an inline schema, or ``("text/plain", ...)`` given as
    ``{"text/plain": {...}}``. Every error status gets the error body.
    """
    def attach(handler: F) -> F:
        handler.__openapi__ = Doc(  # type: ignore[attr-defined]
            summary, dict(responses or {}), tag, body, list(query or []), hidden,
            dict(path or {}))
        return handler
    return attach


def json_body(schema: str | dict[str, Any]) -> dict[str, Any]:
    s = _ref(schema) if isinstance(schema, str) else schema
    return {"required": True, "content": {"application/json": {"schema": s}}}


def query_param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_PARAM = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::[^>]*)?>")


def _response(status: int, description: str, schema: Any) -> dict[str, Any]:
    if status >= 400 and schema is None:
        schema = "Error"
    if schema is None:
        return {"description": description}
    if isinstance(schema, dict) and any("/" in k for k in schema):
        content = {ctype: {"schema": s} for ctype, s in schema.items()}
    else:
        content = {"application/json": {"schema": _ref(schema) if isinstance(schema, str)
                                        else schema}}
    return {"description": description, "content": content}


def _routes(app: Sanic[Any, Any]) -> list[tuple[str, str, Any]]:
    out = []
    for route in app.router.routes:
        path = "/" + route.path.lstrip("/")
        for method in sorted(route.methods):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method.lower(), path, route.handler))
    return out


def undocumented(app: Sanic[Any, Any]) -> list[str]:
    """Routes with no ``@doc``: each must get one (or ``hidden=True``)."""
    return sorted(f"{m.upper()} {p}" for m, p, h in _routes(app)
                  if getattr(h, "__openapi__", None) is None)


def build_spec(app: Sanic[Any, Any], protected_prefix: str = "/api/") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in _routes(app):
        d: Doc | None = getattr(handler, "__openapi__", None)
        if d is None or d.hidden:
            continue
        names = _PARAM.findall(path)
        oa_path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
        op: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": d.summary,
            "tags": [d.tag] if d.tag else [],
            "parameters": [{"name": n, "in": "path", "required": True,
                            "schema": d.path.get(n, NAME)} for n in names] + d.query,
            "responses": {},
        }
        if d.body is not None:
            op["requestBody"] = d.body
        responses = dict(d.responses)
        if path.startswith(protected_prefix):
            responses.setdefault(401, ("the management API's bearer token is missing or "
                                       "wrong (required off loopback, or with "
                                       "serve --require-token)", None))
            op["security"] = [{"bearer": []}]
        for status in sorted(responses):
            desc, schema = responses[status]
            op["responses"][str(status)] = _response(status, desc, schema)
        paths.setdefault(oa_path, {})[method] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": _version(),
                 "description": "A single-node serverless platform. Errors answer "
                                '{"error": {"code": ..., "message": ...}}.'},
        "paths": {p: paths[p] for p in sorted(paths)},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    from allinone import __version__
    return __version__


def register(app: Sanic[Any, Any]) -> None:
    """Serve ``GET /openapi.json`` (built at the first request, then cached)."""

    @app.get("/openapi.json")
    @doc("this document: the API contract", tag="meta",
         responses={200: ("OpenAPI 3.0 document", {"type": "object"})})
    async def openapi_document(request: Request) -> HTTPResponse:
        spec = getattr(request.app.ctx, "openapi", None)
        if spec is None:
            spec = build_spec(request.app)
            request.app.ctx.openapi = spec
        return json_response(spec)


def main() -> None:
    """Print the code's contract (to refresh the committed openapi.json)."""
    import tempfile
    from pathlib import Path

    from allinone.app import build_app
    from allinone.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(Settings(state_dir=Path(tmp)), name="openapi_dump")
        print(json.dumps(build_spec(app), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
