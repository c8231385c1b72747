"""The workflow API: Workflow objects, starting executions, reading their history.

Routes (see README): ``/api/v1/workflows[/NAME]`` (POST, GET, PUT, DELETE),
``POST /workflow/NAME`` (run and wait: 200 with the outcome, a failed execution
included, like Step Functions' synchronous start; ``?mode=async``: 202 at once),
``GET /api/v1/workflows/NAME/executions`` (newest first, paged with ``limit`` and
``continue``) and ``.../executions/ID`` (with the history events).

Definitions are validated completely before anything is stored (400 naming the path
of what is wrong); a running execution keeps the definition it started with.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json as json_response

from allinone import objects
from allinone.apiserver.openapi import doc, json_body, query_param
from allinone.apiserver.routes import ApiError, deps_of
from allinone.objects import ValidationError
from allinone.store import AlreadyExists, Conflict, NotFound, Obj
from allinone.workflows.interpreter import MAX_PAYLOAD
from allinone.workflows.runner import WorkflowNotFound, WorkflowRunner, workflow_object
from allinone.workflows.validate import DefinitionError, validate

MAX_DEFINITION = 256 * 1024
DEFAULT_PAGE, MAX_PAGE = 50, 500


def runner_of(request: Request) -> WorkflowRunner:
    runner: WorkflowRunner = request.app.ctx.workflows
    return runner


def _json_body(request: Request, limit: int, what: str) -> Any:
    if len(request.body) > limit:
        raise ApiError(413, "TooLarge", f"the {what} is {len(request.body)} bytes; the limit "
                       f"is {limit}")
    if not request.body:
        return None
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "BadRequest", f"the {what} is not valid JSON ({exc}); send a JSON "
                       "document") from None


def _definition(body: Any, example: str) -> Any:
    if not isinstance(body, dict) or "definition" not in body:
        raise ApiError(400, "BadRequest", f"send JSON {example} with an Amazon States "
                       "Language state machine as the definition")
    return body["definition"]


def make_workflows_blueprint() -> Blueprint:
    bp = Blueprint("workflows")

    async def get_workflow(request: Request, name: str) -> Obj:
        try:
            return await deps_of(request).store.get(objects.workflow_key(name))
        except NotFound:
            raise ApiError(404, "NotFound", f"no workflow named {name!r}; `allinone workflow "
                           "list` shows what is deployed") from None

    @bp.post("/api/v1/workflows")
    @doc("create a workflow (an Amazon States Language state machine over functions)",
         tag="workflows", body=json_body("WorkflowInput"), responses={
             201: ("created", "Workflow"), 400: ("bad name or definition", None),
             409: ("a workflow of that name exists", None), 413: ("definition too large", None)})
    async def create_workflow(request: Request) -> HTTPResponse:
        body = _json_body(request, MAX_DEFINITION, "workflow")
        definition = _definition(body, '{"name": "...", "definition": {...}}')
        try:
            wf = workflow_object(body.get("name", ""), definition)
        except (ValidationError, DefinitionError) as exc:
            raise ApiError(400, "BadRequest", str(exc).replace("the function", "the workflow")
                           ) from exc
        name = wf["metadata"]["name"]
        try:
            created = await deps_of(request).store.create(objects.workflow_key(name), wf)
        except AlreadyExists:
            raise ApiError(409, "AlreadyExists", f"workflow {name!r} already exists; update it "
                           "with PUT (`allinone workflow deploy` does) or delete it") from None
        return json_response(created, status=201)

    @bp.get("/api/v1/workflows")
    @doc("list workflows", tag="workflows", responses={200: ("all workflows", "WorkflowList")})
    async def list_workflows(request: Request) -> HTTPResponse:
        items, _ = await deps_of(request).store.list(objects.WORKFLOWS_PREFIX)
        return json_response({"items": items})

    @bp.get("/api/v1/workflows/<name>")
    @doc("read a workflow", tag="workflows",
         responses={200: ("the workflow", "Workflow"), 404: ("no such workflow", None)})
    async def read_workflow(request: Request, name: str) -> HTTPResponse:
        return json_response(await get_workflow(request, name))

    @bp.put("/api/v1/workflows/<name>")
    @doc("replace a workflow's definition (running executions keep theirs)", tag="workflows",
         body=json_body("WorkflowUpdate"), responses={
             200: ("updated (or unchanged)", "Workflow"), 400: ("bad definition", None),
             404: ("no such workflow", None), 409: ("kept changing; retry", None),
             413: ("definition too large", None)})
    async def update_workflow(request: Request, name: str) -> HTTPResponse:
        body = _json_body(request, MAX_DEFINITION, "workflow")
        definition = _definition(body, '{"definition": {...}}')
        try:
            validate(definition)
        except DefinitionError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc
        store = deps_of(request).store
        for _ in range(5):
            wf = await get_workflow(request, name)
            if wf["spec"]["definition"] == definition:
                return json_response(wf)
            new = copy.deepcopy(wf)
            new["spec"]["definition"] = definition
            new["metadata"]["generation"] += 1
            new["status"] = {"phase": "Ready", "message": ""}
            try:
                return json_response(await store.update(objects.workflow_key(name), new))
            except Conflict:
                continue
        raise ApiError(409, "Conflict", f"workflow {name!r} kept changing; retry the update")

    @bp.delete("/api/v1/workflows/<name>")
    @doc("delete a workflow, its executions and their history", tag="workflows",
         responses={200: ("deleted", "WorkflowDeleted"), 404: ("no such workflow", None)})
    async def delete_workflow(request: Request, name: str) -> HTTPResponse:
        wf = await get_workflow(request, name)
        with contextlib.suppress(NotFound):
            await deps_of(request).store.delete(objects.workflow_key(name))
        await runner_of(request).forget_workflow(name)
        return json_response({"deleted": name, "workflow": wf})

    @bp.post("/workflow/<name>")
    @doc("start an execution: wait for its outcome, or ?mode=async for 202 at once",
         tag="invocation", body=json_body({"description": "the execution's input (JSON)"}),
         query=[query_param("mode", {"type": "string", "enum": ["sync", "async"]},
                            "sync (default): answer with the outcome; async: 202 at once")],
         responses={200: ("the execution's outcome (a failed one included)", "ExecutionOutcome"),
                    202: ("started", "ExecutionStarted"), 400: ("bad input or mode", None),
                    404: ("no such workflow", None), 413: ("input too large", None)})
    async def start(request: Request, name: str) -> HTTPResponse:
        data = _json_body(request, MAX_PAYLOAD, "execution input")
        data = {} if data is None else data
        mode = request.args.get("mode", "sync")
        if mode not in ("sync", "async"):
            raise ApiError(400, "BadRequest", f"mode must be sync or async, got {mode!r}")
        try:
            out = await runner_of(request).start_execution(name, data, wait=mode == "sync")
        except WorkflowNotFound:
            raise ApiError(404, "NotFound", f"no workflow named {name!r}; deploy it with "
                           "`allinone workflow deploy`") from None
        if mode == "async":
            return json_response({"executionId": out["executionId"]}, status=202)
        keep = ("executionId", "status", "output", "error", "cause")
        return json_response({k: out[k] for k in keep if k in out})

    @bp.get("/api/v1/workflows/<name>/executions")
    @doc("a workflow's executions, newest first, paged", tag="workflows",
         query=[query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                            f"page size (default {DEFAULT_PAGE})"),
                query_param("continue", {"type": "string"}, "the previous page's continue")],
         responses={200: ("executions", "ExecutionList"), 400: ("bad limit", None),
                    404: ("no such workflow", None)})
    async def list_executions(request: Request, name: str) -> HTTPResponse:
        await get_workflow(request, name)
        try:
            limit = int(request.args.get("limit", DEFAULT_PAGE))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "BadRequest", f"limit must be a whole number from 1 to "
                           f"{MAX_PAGE}")
        after = request.args.get("continue")
        items = await runner_of(request).list_executions(name)
        if after:
            items = [e for e in items if e["executionId"] < after]
        page = items[:limit]
        out: dict[str, Any] = {"items": page}
        if len(items) > limit:
            out["continue"] = page[-1]["executionId"]
        return json_response(out)

    @bp.get("/api/v1/workflows/<name>/executions/<eid>")
    @doc("one execution with its history events", tag="workflows",
         path={"eid": {"type": "string"}},
         responses={200: ("the execution", "Execution"), 404: ("no such execution", None)})
    async def read_execution(request: Request, name: str, eid: str) -> HTTPResponse:
        try:
            return json_response(await runner_of(request).describe(name, eid))
        except NotFound:
            raise ApiError(404, "NotFound", f"no execution {eid!r} of workflow {name!r}; "
                           f"`allinone workflow executions {name}` lists them") from None

    return bp
