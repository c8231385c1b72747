"""The workflow runner: durable executions over the interpreter.

Layout in the store (each object Kubernetes-shaped, see :mod:`allinone.objects`):

- ``/allinone/workflows/NAME``: the Workflow (``spec.definition``);
- ``/allinone/executions/NAME/ID``: an Execution. ``spec`` holds a copy of the
  definition it started with (so an update of the workflow never changes a running
  execution) and its input; ``status`` its state (``RUNNING``, ``SUCCEEDED``, ``FAILED``,
  ``TIMED_OUT``), output or error/cause and dates. Written at the start and at the end;
- ``/allinone/history/NAME/ID/NNNNNN``: its history, in chunks appended as it runs
  (appending, not rewriting one growing object, keeps each write small). A chunk
  written at a top-level transition also holds the *checkpoint*: the state about to
  run, its raw input and, in a Wait, when the wait ends.

Durability (crash-only): before the interpreter runs a top-level state, one write
appends the events so far with the checkpoint (one etcd write per transition). After
a restart, :meth:`WorkflowRunner.run`
resumes every ``RUNNING`` execution from its last checkpoint. The state that was running at
the crash runs again from its start: a Task in flight is invoked again (at-least-once;
functions used in workflows should be idempotent), a whole Parallel or Map is re-run,
retry counts start again. ``TimeoutSeconds`` is measured from the recorded start
(wall clock), so downtime counts against it. A stop of the server is the same as a
crash: running executions stay ``RUNNING`` and resume at the next start.

Bounds: at most ``max_executions`` executions per workflow are kept (the oldest
finished ones are pruned with their history); a history keeps at most
``MAX_EVENTS`` events (then ``status.historyTruncated``); the input/output inside an
event is cut to ``EVENT_PAYLOAD_LIMIT`` bytes; the data passed between top-level states
is bounded by the interpreter's ``MAX_PAYLOAD`` (States.DataLimitExceeded).

Execution IDs sort by start time (hex milliseconds, then random), so a key-ordered list
is a time-ordered list.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from allinone import objects
from allinone.clock import Clock
from allinone.metrics import Metrics
from allinone.store import AlreadyExists, Conflict, NotFound, Obj, Store, StoreError
from allinone.workflows.errors import DATA_LIMIT, StatesError
from allinone.workflows.interpreter import (
    MAX_PAYLOAD,
    Interpreter,
    Outcome,
    Resume,
    iso,
)
from allinone.workflows.invoker import Invoker
from allinone.workflows.validate import validate

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNNING = "RUNNING"
MAX_EVENTS = 5000
EVENT_PAYLOAD_LIMIT = 8 * 1024
FLUSH_EVERY = 100  # events buffered at most between two history writes
STORE_RETRY_SECONDS = 60.0


class WorkflowNotFound(LookupError):
    pass


class ExecutionGone(Exception):
    """The execution's record was deleted (pruned, or its workflow deleted)."""


def history_prefix(workflow: str, execution_id: str) -> str:
    return f"{objects.HISTORY_PREFIX}{workflow}/{execution_id}/"


def new_execution_id(wall: float) -> str:
    return f"{int(wall * 1000):012x}-{uuid.uuid4().hex[:12]}"


def _cut(value: Any) -> Any:
    text = json.dumps(value)
    if len(text) <= EVENT_PAYLOAD_LIMIT:
        return value
    return {"truncated": True, "bytes": len(text), "preview": text[:1024]}


def workflow_object(name: str, definition: Any) -> Obj:
    """A new Workflow; raises ValidationError (name) or DefinitionError (definition)."""
    objects.validate_name(name)
    wf = objects.new_object("Workflow", name, {"definition": validate(definition)})
    wf["status"] = {"phase": "Ready", "message": ""}
    return wf


def view(execution: Obj, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An execution as the API shows it (Step Functions' DescribeExecution fields)."""
    st = execution["status"]
    out: dict[str, Any] = {
        "executionId": execution["metadata"]["name"],
        "workflow": execution["spec"]["workflow"],
        "status": st["status"],
        "input": execution["spec"]["input"],
        "startDate": st.get("startDate"),
        "stopDate": st.get("stopDate"),
    }
    if st["status"] == "SUCCEEDED":
        out["output"] = st.get("output")
    elif st["status"] != RUNNING:
        out["error"], out["cause"] = st.get("error"), st.get("cause")
    if st.get("historyTruncated"):
        out["historyTruncated"] = True
    if events is not None:
        out["events"] = events
    return out


class Recorder:
    """The interpreter's :class:`~allinone.workflows.interpreter.Sink` for one execution.

    One store write per top-level transition: a history chunk holding the events since
    the last one and the checkpoint. The Execution object itself is written only when
    the execution starts and when it ends.
    """

    def __init__(self, runner: WorkflowRunner, key: str, execution: Obj, *, events: int = 0,
                 chunks: int = 0) -> None:
        self.runner = runner
        self.key = key
        self.execution = execution
        self.buffer: list[dict[str, Any]] = []
        self.count = events
        self.chunks = chunks

    async def event(self, event: dict[str, Any]) -> None:
        if self.count >= MAX_EVENTS:
            self.execution["status"]["historyTruncated"] = True
            return
        for f in ("input", "output"):
            if f in event:
                event[f] = _cut(event[f])
        self.count += 1
        event["id"] = self.count
        self.buffer.append(event)
        if len(self.buffer) >= FLUSH_EVERY:
            await self.flush()

    async def transition(self, state: str, state_input: Any, wait_until: float | None) -> None:
        size = len(json.dumps(state_input))
        if size > MAX_PAYLOAD:
            raise StatesError(DATA_LIMIT, f"the input of state {state!r} is {size} bytes; the "
                              f"limit is {MAX_PAYLOAD}")
        await self.flush({"state": state, "input": state_input, "waitUntil": wait_until})

    async def flush(self, checkpoint: dict[str, Any] | None = None) -> None:
        """Append the buffered events (and a checkpoint) as the next chunk. Concurrent
        callers (Map iterations, Parallel branches) each take their own batch and number."""
        if not self.buffer and checkpoint is None:
            return
        batch, self.buffer = self.buffer, []
        self.chunks += 1
        n = self.chunks
        name = self.execution["metadata"]["name"]
        spec: dict[str, Any] = {"events": batch}
        if checkpoint is not None:
            spec["checkpoint"] = checkpoint
        chunk = objects.new_object("HistoryChunk", f"{name}-{n:06d}", spec)
        key = f"{history_prefix(self.execution['spec']['workflow'], name)}{n:06d}"
        await self.runner.retrying(lambda: self.runner.store.create(key, chunk))

    async def finish(self) -> None:
        """The last events, then the Execution with its outcome."""
        await self.flush()

        async def write() -> Obj:
            return await self.runner.store.update(self.key, self.execution)
        try:
            self.execution = await self.runner.retrying(write)
        except NotFound:
            raise ExecutionGone(self.key) from None


class WorkflowRunner:
    """Starts, records and resumes executions. One per server."""

    def __init__(self, store: Store, invoker: Invoker, clock: Clock,
                 metrics: Metrics | None = None, *, max_executions: int = 100) -> None:
        self.store = store
        self.invoker = invoker
        self.clock = clock
        self.metrics = metrics
        self.max_executions = max_executions
        self.running: dict[str, asyncio.Task[Obj]] = {}
        # workflow -> execution IDs known to exist, oldest first (loaded on first use)
        self._ids: dict[str, list[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopped: set[str] = set()  # finished, their tasks not yet gone from running

    async def retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """A store write, retried while etcd is unavailable (not on NotFound/Conflict)."""
        delay, waited = 0.1, 0.0
        while True:
            try:
                return await op()
            except (NotFound, Conflict, AlreadyExists):
                raise
            except StoreError as exc:
                if waited >= STORE_RETRY_SECONDS:
                    raise
                log.warning("workflow store write failed (%s); retrying in %.1f s", exc, delay)
                await self.clock.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    # -- the API others call ----------------------------------------------------------

    async def start_execution(self, workflow: str, execution_input: Any, *,
                              wait: bool) -> dict[str, Any]:
        """Start an execution of ``workflow``; the API view of it when it is recorded
        (``wait=False``) or when it has finished (``wait=True``).

        Raises :class:`WorkflowNotFound`; store errors propagate. With ``wait`` the
        execution continues when the caller is cancelled (its record says how it ended).
        """
        try:
            wf = await self.store.get(objects.workflow_key(workflow))
        except NotFound:
            raise WorkflowNotFound(workflow) from None
        wall = self.clock.wall()
        eid = new_execution_id(wall)
        execution = objects.new_object(
            "Execution", eid,
            {"workflow": workflow, "definition": wf["spec"]["definition"],
             "input": execution_input, "workflowGeneration": wf["metadata"]["generation"]},
            labels={"workflow": workflow})
        execution["status"] = {"status": RUNNING, "startDate": iso(wall), "startWall": wall}
        key = objects.execution_key(workflow, eid)
        created = await self.store.create(key, execution)
        task = self._spawn(key, created, None)
        try:
            await self._remember(workflow, eid)
        except StoreError as exc:  # pruning is housekeeping: never fail a start for it
            log.warning("could not prune the executions of %s: %s", workflow, exc)
        if not wait:
            return view(created)
        return view(await asyncio.shield(task))

    async def wait(self, workflow: str, execution_id: str) -> dict[str, Any] | None:
        """The final view of an execution running here, or None when it is not running."""
        task = self.running.get(objects.execution_key(workflow, execution_id))
        return None if task is None else view(await asyncio.shield(task))

    async def describe(self, workflow: str, execution_id: str) -> dict[str, Any]:
        """An execution with its history; raises NotFound."""
        execution = await self.store.get(objects.execution_key(workflow, execution_id))
        chunks, _ = await self.store.list(history_prefix(workflow, execution_id))
        events = [e for c in chunks for e in c["spec"]["events"]]
        return view(execution, events)

    async def list_executions(self, workflow: str) -> list[dict[str, Any]]:
        items, _ = await self.store.list(f"{objects.EXECUTIONS_PREFIX}{workflow}/")
        return [view(e) for e in reversed(items)]

    async def forget_workflow(self, workflow: str) -> None:
        """Delete a workflow's executions and history (its running ones stop)."""
        for key, task in list(self.running.items()):
            if key.startswith(f"{objects.EXECUTIONS_PREFIX}{workflow}/"):
                task.cancel()
        items, _ = await self.store.list(f"{objects.EXECUTIONS_PREFIX}{workflow}/")
        for e in items:
            await self._delete(workflow, e["metadata"]["name"])
        self._ids.pop(workflow, None)

    # -- the loop the server runs -----------------------------------------------------

    async def run(self) -> None:
        """Resume what was running before a restart, then keep the executions' tasks.

        Cancelled at shutdown: running executions stop where they are and stay
        RUNNING in the store, to be resumed by the next server.
        """
        try:
            await self.retrying(self.resume_all)
            await asyncio.Event().wait()
        finally:
            tasks = list(self.running.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def resume_all(self) -> int:
        items, _ = await self.store.list(objects.EXECUTIONS_PREFIX)
        n = 0
        for e in items:
            workflow, eid = e["spec"]["workflow"], e["metadata"]["name"]
            key = objects.execution_key(workflow, eid)
            if e.get("status", {}).get("status") != RUNNING or key in self.running:
                continue
            chunks, _ = await self.store.list(history_prefix(workflow, eid))
            events = max((ev.get("id", 0) for c in chunks for ev in c["spec"]["events"]),
                         default=0)
            numbers = [int(c["metadata"]["name"].rsplit("-", 1)[-1]) for c in chunks]
            cp = next((c["spec"]["checkpoint"] for c in reversed(chunks)
                       if "checkpoint" in c["spec"]),
                      {"state": e["spec"]["definition"]["StartAt"], "input": e["spec"]["input"],
                       "waitUntil": None})
            log.info("resuming execution %s at state %r", key, cp["state"])
            self._spawn(key, e, Resume(cp["state"], cp["input"], cp.get("waitUntil")),
                        events=events, chunks=max(numbers, default=0))
            n += 1
        return n

    # -- internals --------------------------------------------------------------------

    def _spawn(self, key: str, execution: Obj, resume: Resume | None, *, events: int = 0,
               chunks: int = 0) -> asyncio.Task[Obj]:
        task = asyncio.ensure_future(self._execute(key, copy.deepcopy(execution), resume,
                                                   events, chunks))
        self.running[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        if self.metrics is not None:
            self.metrics.workflow_running.labels(execution["spec"]["workflow"]).inc()
        return task

    def _done(self, key: str, task: asyncio.Task[Obj]) -> None:
        self.running.pop(key, None)
        self._stopped.discard(key)
        workflow = key[len(objects.EXECUTIONS_PREFIX):].split("/", 1)[0]
        if self.metrics is not None:
            self.metrics.workflow_running.labels(workflow).dec()
        if not task.cancelled() and task.exception() is not None:
            log.error("execution %s stopped: %r", key, task.exception())

    async def _execute(self, key: str, execution: Obj, resume: Resume | None, events: int,
                       chunks: int) -> Obj:
        spec, st = execution["spec"], execution["status"]
        rec = Recorder(self, key, execution, events=events, chunks=chunks)
        if resume is not None:
            await rec.event({"timestamp": iso(self.clock.wall()), "type": "ExecutionResumed",
                             "name": resume.state, "input": resume.input})
        interp = Interpreter(spec["definition"], self.invoker, self.clock, rec,
                             execution_id=execution["metadata"]["name"],
                             workflow=spec["workflow"])
        try:
            outcome = await interp.run(spec["input"], start_wall=st["startWall"], resume=resume)
        except ExecutionGone:
            log.info("execution %s was deleted while it ran; stopped", key)
            raise
        except Exception as exc:  # a bug or a store that stayed down: say so in the record
            log.exception("execution %s failed inside the engine", key)
            outcome = Outcome("FAILED", error="States.Runtime",
                              cause=f"the workflow engine failed: {type(exc).__name__}: {exc}")
        return await self._finish(rec, outcome)

    async def _finish(self, rec: Recorder, outcome: Outcome) -> Obj:
        st = rec.execution["status"]
        wall = self.clock.wall()
        st.update(status=outcome.status, stopDate=iso(wall))
        if outcome.status == "SUCCEEDED":
            st["output"] = outcome.output
        else:
            st["error"], st["cause"] = outcome.error, outcome.cause
        await rec.finish()
        self._stopped.add(rec.key)
        try:
            await self._remember(rec.execution["spec"]["workflow"],
                                 rec.execution["metadata"]["name"])
        except StoreError as exc:
            log.warning("could not prune executions: %s", exc)
        if self.metrics is not None:
            workflow = rec.execution["spec"]["workflow"]
            self.metrics.workflow_executions.labels(workflow, outcome.status).inc()
            self.metrics.workflow_duration.labels(workflow).observe(
                max(0.0, wall - st["startWall"]))
        return rec.execution

    async def _remember(self, workflow: str, eid: str) -> None:
        """Note execution ``eid`` and prune the oldest finished ones beyond the bound;
        called when an execution starts and when it ends (a finished one whose task is
        not yet gone from :attr:`running` is in ``_stopped``).

        Victims leave the in-memory list before any await, so concurrent starts never
        pick the same one; a failed delete is logged (the next start tries others).
        """
        async with self._locks.setdefault(workflow, asyncio.Lock()):
            ids = self._ids.get(workflow)
            if ids is None:
                items, _ = await self.store.list(f"{objects.EXECUTIONS_PREFIX}{workflow}/")
                ids = self._ids[workflow] = [e["metadata"]["name"] for e in items]
            if eid not in ids:
                bisect.insort(ids, eid)
            victims = []
            excess = len(ids) - self.max_executions
            for old in list(ids):
                if excess <= 0:
                    break
                key = objects.execution_key(workflow, old)
                if old == eid or (key in self.running and key not in self._stopped):
                    continue  # never prune a running one, nor the one starting or ending
                ids.remove(old)
                victims.append(old)
                excess -= 1
        for old in victims:
            try:
                await self._delete(workflow, old)
            except StoreError as exc:
                log.warning("could not prune execution %s/%s: %s", workflow, old, exc)

    async def _delete(self, workflow: str, eid: str) -> None:
        chunks, _ = await self.store.list(history_prefix(workflow, eid))
        with contextlib.suppress(NotFound):
            await self.store.delete(objects.execution_key(workflow, eid))
        for c in chunks:
            with contextlib.suppress(NotFound):
                await self.store.delete(
                    f"{history_prefix(workflow, eid)}{c['metadata']['name'].rsplit('-', 1)[-1]}")
