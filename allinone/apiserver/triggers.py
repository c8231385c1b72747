"""The triggers API: ``/api/v1/triggers`` (create, list, read, update, delete, events).

Like the functions API it only validates and writes to the store; the trigger runners
(:mod:`allinone.triggers.runner`) act on the objects through their watch. A spec is
checked completely (:func:`allinone.triggers.spec.normalize`) before anything is
written, and a 400 names the field. The server's state directory may be neither watched
nor written by a sink.

``PUT`` replaces the spec (a new ``generation``; the runner restarts with it); a changed
schedule or time zone starts counting from now, so it does not report the times the old
schedule never had as missed. ``DELETE`` removes the object; the runner stops and
removes the trigger's records.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import json as json_response

from allinone import objects
from allinone.apiserver.openapi import doc, json_body, query_param
from allinone.apiserver.routes import ApiError, deps_of
from allinone.objects import ValidationError
from allinone.store import AlreadyExists, Conflict, NotFound, Obj
from allinone.triggers.journal import Journal
from allinone.triggers.spec import normalize, trigger_key

MAX_EVENTS = 100
_SUMMARY_FIELDS = ("event", "name", "size", "scheduledTime", "firedTime", "missed",
                   "latestScheduledTime")


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json if request.body else None
    except Exception:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", 'send a JSON object {"name": ..., "spec": {...}}, e.g. '
                       '{"name": "tick", "spec": {"target": {"function": "f"}, '
                       '"schedule": "@every 10s"}}')
    return body


def _spec(request: Request, user: object) -> Obj:
    settings = deps_of(request).settings
    try:
        return normalize(user, forbidden=[settings.state_dir.expanduser().resolve()])
    except ValidationError as exc:
        raise ApiError(400, "BadSpec", str(exc)) from None


async def _get(request: Request, name: str) -> Obj:
    try:
        return await deps_of(request).store.get(trigger_key(name))
    except NotFound:
        raise ApiError(404, "NotFound", f"no trigger named {name!r}; `allinone trigger list` "
                       "shows them") from None


def event_summary(rec: Obj) -> Obj:
    """One delivery as the events API shows it: time, input summary, outcome."""
    st, ev = rec.get("status", {}), rec["spec"].get("event", {})
    return {
        "id": rec["metadata"]["name"],
        "time": st.get("time"),
        "input": {k: ev[k] for k in _SUMMARY_FIELDS if k in ev},
        "status": st.get("phase"),
        "attempts": st.get("attempts", 0),
        "httpStatus": st.get("httpStatus"),
        "latencySeconds": st.get("latencySeconds"),
        "error": st.get("error") or None,
        **({"sink": st["sink"]} if st.get("sink") else {}),
    }


def make_trigger_blueprint() -> Blueprint:
    bp = Blueprint("triggers")

    @bp.post("/api/v1/triggers")
    @doc("create a trigger (a schedule or a file watch firing a function or workflow)",
         tag="triggers", body=json_body("TriggerInput"), responses={
             201: ("created", "Trigger"), 400: ("bad name or spec", None),
             409: ("a trigger of that name exists", None)})
    async def create_trigger(request: Request) -> HTTPResponse:
        body = _body(request)
        name = body.get("name")
        try:
            objects.validate_name(name)
        except ValidationError as exc:
            raise ApiError(400, "BadRequest", str(exc).replace("the function", "the trigger")
                           ) from None
        spec = _spec(request, body.get("spec"))
        obj = objects.new_object("Trigger", str(name), spec)
        obj["status"] = {"fires": 0, "failures": 0, "missed": 0}
        try:
            created = await deps_of(request).store.create(trigger_key(str(name)), obj)
        except AlreadyExists:
            raise ApiError(409, "AlreadyExists", f"trigger {name!r} already exists; change it "
                           "with PUT or delete it first") from None
        return json_response(created, status=201)

    @bp.get("/api/v1/triggers")
    @doc("list triggers", tag="triggers", responses={200: ("all triggers", "TriggerList")})
    async def list_triggers(request: Request) -> HTTPResponse:
        from allinone.triggers.spec import TRIGGERS_PREFIX
        items, _ = await deps_of(request).store.list(TRIGGERS_PREFIX)
        return json_response({"items": items})

    @bp.get("/api/v1/triggers/<name>")
    @doc("read a trigger", tag="triggers",
         responses={200: ("the trigger", "Trigger"), 404: ("no such trigger", None)})
    async def read_trigger(request: Request, name: str) -> HTTPResponse:
        return json_response(await _get(request, name))

    @bp.put("/api/v1/triggers/<name>")
    @doc("replace a trigger's spec (a new generation)", tag="triggers",
         body=json_body("TriggerUpdate"), responses={
             200: ("updated (or unchanged)", "Trigger"), 400: ("bad spec", None),
             404: ("no such trigger", None), 409: ("kept changing; retry", None)})
    async def update_trigger(request: Request, name: str) -> HTTPResponse:
        body = _body(request)
        if "spec" not in body:
            raise ApiError(400, "BadRequest", 'a PUT needs a body {"spec": {...}} with the whole '
                           "new spec")
        spec = _spec(request, body["spec"])
        store = deps_of(request).store
        for _ in range(5):
            old = await _get(request, name)
            if old["spec"] == spec:
                return json_response(old)
            new = copy.deepcopy(old)
            new["spec"] = spec
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            if (spec.get("schedule"), spec.get("timezone")) != (
                    old["spec"].get("schedule"), old["spec"].get("timezone")):
                new["status"]["lastScheduleTime"] = objects.rfc3339(time.time())
                new["status"]["pendingScheduleTime"] = None
            new["status"]["lastError"] = ""
            try:
                return json_response(await store.update(trigger_key(name), new))
            except Conflict:
                continue
        raise ApiError(409, "Conflict", f"trigger {name!r} kept changing; retry the update")

    @bp.delete("/api/v1/triggers/<name>")
    @doc("delete a trigger and its delivery records", tag="triggers",
         responses={200: ("deleted", "TriggerDeleted"), 404: ("no such trigger", None)})
    async def delete_trigger(request: Request, name: str) -> HTTPResponse:
        obj = await _get(request, name)
        try:
            await deps_of(request).store.delete(trigger_key(name))
        except NotFound:
            pass
        return json_response({"deleted": name, "trigger": obj})

    @bp.get("/api/v1/triggers/<name>/events")
    @doc("a trigger's latest deliveries, newest first", tag="triggers",
         query=[query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
                            "how many (default 20)")],
         responses={200: ("deliveries", "TriggerEventList"), 400: ("bad limit", None),
                    404: ("no such trigger", None)})
    async def trigger_events(request: Request, name: str) -> HTTPResponse:
        obj = await _get(request, name)
        raw_limit = request.args.get("limit", "20")
        try:
            limit = int(raw_limit)
            if not 1 <= limit <= MAX_EVENTS:
                raise ValueError
        except ValueError:
            raise ApiError(400, "BadRequest", f"limit must be a whole number from 1 to "
                           f"{MAX_EVENTS}, got {raw_limit!r}") from None
        records = await Journal(deps_of(request).store).list(name, obj["metadata"]["uid"])
        newest = [event_summary(r) for r in reversed(records)][:limit]
        return json_response({"items": newest})

    return bp
