"""The ASL interpreter: runs one execution of a state machine (no I/O of its own).

Everything outside comes in through three small interfaces, so the whole language is
unit-tested over a :class:`~allinone.workflows.invoker.FakeInvoker` and a ManualClock:

- an :class:`~allinone.workflows.invoker.Invoker` for Task states;
- a :class:`~allinone.clock.Clock` for Wait, Retry back-off and time limits;
- a :class:`Sink` that receives the history events (Step Functions' names plus
  ``TaskRetried``/``TaskCaught``) and, for the top-level machine, every transition
  (state name and its raw input) before the state runs. The runner persists that
  checkpoint; :class:`Resume` restarts from it after a crash.

Order of input/output processing, as the specification gives it: ``InputPath`` ->
``Parameters`` (``ItemSelector`` per Map item) -> the work -> ``ResultSelector`` ->
``ResultPath`` (merged into the state's *raw* input) -> ``OutputPath``. On an error the
state's retriers are tried in order (the first whose ``ErrorEquals`` matches decides;
each retrier counts its own attempts), then its catchers; a caught error becomes
``{"Error", "Cause"}`` placed by the catcher's ``ResultPath`` into the raw input.

Invariants: a state's work is cancelled when the execution times out; Parallel and Map
cancel their other branches/iterations when one fails; payloads (Task results, Map and
Parallel outputs) are bounded by ``max_payload`` (States.DataLimitExceeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from allinone.clock import Clock
from allinone.workflows import choice, errors
from allinone.workflows.errors import StatesError
from allinone.workflows.intrinsics import evaluate as intrinsic
from allinone.workflows.intrinsics import is_intrinsic
from allinone.workflows.invoker import Invoker, Reply
from allinone.workflows.paths import (
    apply_input_path,
    apply_result_path,
    render_template,
    select,
)

T = TypeVar("T")
MAX_PAYLOAD = 256 * 1024  # Step Functions' limit on a state's input or output

SUCCEEDED, FAILED, TIMED_OUT = "SUCCEEDED", "FAILED", "TIMED_OUT"
_FUNCTION_ERROR = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)(?:: (.*))?$", re.DOTALL)


class Sink(Protocol):
    async def event(self, event: dict[str, Any]) -> None: ...

    async def transition(self, state: str, state_input: Any, wait_until: float | None) -> None:
        """The top-level machine is about to run ``state`` on ``state_input``."""
        ...


@dataclass(frozen=True)
class Resume:
    """Where a crashed execution continues: the last recorded transition."""

    state: str
    input: Any
    wait_until: float | None = None


@dataclass(frozen=True)
class Outcome:
    status: str
    output: Any = None
    error: str | None = None
    cause: str | None = None


class _TimedOut(Exception):
    pass


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def task_error(resource: str, reply: Reply) -> StatesError:
    """The ASL error of a non-200 answer of the activator/shim."""
    code, msg = "", reply.body[:500].decode(errors="replace")
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        err = json.loads(reply.body)["error"]
        code, msg = str(err.get("code", "")), str(err.get("message", ""))
    if reply.status == 404:
        return StatesError(errors.TASK_FAILED, f"function {resource!r} does not exist: deploy it "
                           f"(`allinone function deploy {resource} ...`) or fix the Resource")
    if code == "FunctionError":
        m = _FUNCTION_ERROR.match(msg)
        if m is not None:
            return StatesError(m.group(1), m.group(2) or "")
    if reply.status == 504:
        return StatesError(errors.TIMEOUT, f"function {resource!r} timed out: {msg}")
    return StatesError(errors.TASK_FAILED, f"function {resource!r} answered HTTP "
                       f"{reply.status} {code}: {msg}".rstrip(": "))


class Interpreter:
    def __init__(self, definition: dict[str, Any], invoker: Invoker, clock: Clock, sink: Sink,
                 *, execution_id: str, workflow: str = "",
                 rng: random.Random | None = None, max_payload: int = MAX_PAYLOAD) -> None:
        self.definition = definition
        self.invoker = invoker
        self.clock = clock
        self.sink = sink
        self.execution_id = execution_id
        self.workflow = workflow
        self.rng = rng or random.Random()
        self.max_payload = max_payload
        self.deadline: float | None = None  # wall time the execution must end by

    # -- the execution ----------------------------------------------------------------

    async def run(self, execution_input: Any, *, start_wall: float | None = None,
                  resume: Resume | None = None) -> Outcome:
        """Run to the end. ``start_wall`` (epoch seconds) anchors ``TimeoutSeconds``."""
        start = self.clock.wall() if start_wall is None else start_wall
        ctx = {
            "Execution": {"Id": self.execution_id, "Name": self.execution_id,
                          "Input": execution_input, "StartTime": iso(start)},
            "StateMachine": {"Id": self.workflow, "Name": self.workflow},
        }
        if resume is None:
            await self._emit("ExecutionStarted", input=execution_input)
        limit = self.definition.get("TimeoutSeconds")
        self.deadline = None if limit is None else start + limit
        try:
            # The deadline is checked at every transition and caps every sleep and
            # every Task invocation, so no timer runs beside the whole execution.
            output = await self._machine(self.definition, execution_input, ctx, top=True,
                                         resume=resume)
        except _TimedOut:
            cause = f"the execution did not finish within TimeoutSeconds ({limit} s)"
            await self._emit("ExecutionTimedOut", error=errors.TIMEOUT, cause=cause)
            return Outcome(TIMED_OUT, error=errors.TIMEOUT, cause=cause)
        except StatesError as exc:
            await self._emit("ExecutionFailed", error=exc.error, cause=exc.cause)
            return Outcome(FAILED, error=exc.error, cause=exc.cause)
        await self._emit("ExecutionSucceeded", output=output)
        return Outcome(SUCCEEDED, output=output)

    async def _emit(self, kind: str, **fields: Any) -> None:
        await self.sink.event({"timestamp": iso(self.clock.wall()), "type": kind, **fields})

    async def _within(self, work: Coroutine[Any, Any, T], seconds: float) -> T:
        """``work``, or :class:`_TimedOut` when ``seconds`` pass first on the clock.

        The timer is armed only when the work did not finish in its first step: a clock
        whose ``sleep`` jumps time forward (ManualClock) must not jump past work that
        takes no time.
        """
        task = asyncio.ensure_future(work)
        await asyncio.sleep(0)
        if not task.done():
            if seconds <= 0:
                task.cancel()
            timer = asyncio.ensure_future(self.clock.sleep(max(0.0, seconds)))
            try:
                await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                if not task.done():  # timed out, or we are being cancelled ourselves
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if task.cancelled():
            raise _TimedOut
        return task.result()

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the clock, but never past the execution's deadline."""
        if self.deadline is not None:
            seconds = min(seconds, self.deadline - self.clock.wall())
        await self.clock.sleep(max(0.0, seconds))
        self._check_deadline()

    def _check_deadline(self) -> None:
        if self.deadline is not None and self.clock.wall() >= self.deadline:
            raise _TimedOut

    async def _machine(self, machine: dict[str, Any], data: Any, ctx: dict[str, Any], *,
                       top: bool, resume: Resume | None = None) -> Any:
        name: str = machine["StartAt"]
        wait_until = None
        if resume is not None:
            name, data, wait_until = resume.state, resume.input, resume.wait_until
        while True:
            state = machine["States"][name]
            self._check_deadline()
            if top:
                await self.sink.transition(name, data, wait_until)
            nxt, data = await self._state(name, state, data, ctx, top=top, wait_until=wait_until)
            wait_until = None
            if nxt is None:
                return data
            name = nxt

    # -- one state --------------------------------------------------------------------

    async def _state(self, name: str, state: dict[str, Any], raw: Any, ctx: dict[str, Any], *,
                     top: bool, wait_until: float | None) -> tuple[str | None, Any]:
        kind = state["Type"]
        sctx = {**ctx, "State": {"Name": name, "EnteredTime": iso(self.clock.wall()),
                                 "RetryCount": 0}}
        await self._emit(f"{kind}StateEntered", name=name, input=raw)
        if kind == "Fail":
            err, cause = self._fail_fields(state, raw, sctx)
            raise StatesError(err, cause)
        if kind in ("Task", "Parallel", "Map"):
            return await self._with_retry(name, state, raw, sctx)
        eff = self._input(state, raw, sctx)
        nxt: str | None
        if kind == "Pass":
            if "Parameters" in state:
                eff = render_template(state["Parameters"], eff, sctx, "Parameters")
            result = state["Result"] if "Result" in state else eff
            out = apply_result_path(state.get("ResultPath", "$"), raw, result)
            nxt = state.get("Next")
        elif kind == "Choice":
            nxt = self._choose(name, state, eff, sctx)
            out = eff
        elif kind == "Wait":
            if wait_until is None:
                wait_until = self.clock.wall() + self._wait_seconds(state, eff, sctx)
                if top:
                    await self.sink.transition(name, raw, wait_until)
            await self._sleep(wait_until - self.clock.wall())
            out, nxt = eff, state.get("Next")
        else:  # Succeed
            out, nxt = eff, None
        out = self._output(state, out, sctx)
        await self._emit(f"{kind}StateExited", name=name, output=out)
        return nxt, out

    def _input(self, state: dict[str, Any], raw: Any, ctx: dict[str, Any]) -> Any:
        return apply_input_path(state.get("InputPath", "$"), raw, ctx)

    def _output(self, state: dict[str, Any], out: Any, ctx: dict[str, Any]) -> Any:
        expr = state.get("OutputPath", "$")
        return {} if expr is None else select(expr, out, ctx, "OutputPath")

    def _fail_fields(self, state: dict[str, Any], raw: Any, ctx: dict[str, Any]
                     ) -> tuple[str, str]:
        def field(f: str) -> str:
            if f in state:
                return str(state[f])
            p = state.get(f + "Path")
            if p is None:
                return ""
            v = intrinsic(p, raw, ctx) if is_intrinsic(p) else select(p, raw, ctx, f + "Path")
            if not isinstance(v, str):
                raise StatesError(errors.RUNTIME, f"{f}Path {p!r} must select a string")
            return v
        return field("Error") or "States.Fail", field("Cause")

    def _choose(self, name: str, state: dict[str, Any], eff: Any, ctx: dict[str, Any]) -> str:
        for rule in state["Choices"]:
            if choice.evaluate(rule, eff, ctx):
                return str(rule["Next"])
        if "Default" in state:
            return str(state["Default"])
        raise StatesError(errors.NO_CHOICE, f"no choice rule of state {name!r} matched and it "
                          "has no Default")

    def _wait_seconds(self, state: dict[str, Any], eff: Any, ctx: dict[str, Any]) -> float:
        if "Seconds" in state:
            return float(state["Seconds"])
        if "SecondsPath" in state:
            v = select(state["SecondsPath"], eff, ctx, "SecondsPath")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise StatesError(errors.RUNTIME, f"SecondsPath {state['SecondsPath']!r} must "
                                  f"select a non-negative number, got {json.dumps(v)[:80]}")
            return float(v)
        text = state.get("Timestamp")
        if "TimestampPath" in state:
            text = select(state["TimestampPath"], eff, ctx, "TimestampPath")
        ts = choice.parse_timestamp(text)
        if ts is None:
            raise StatesError(errors.RUNTIME, f"TimestampPath must select an RFC 3339 "
                              f"timestamp, got {json.dumps(text)[:80]}")
        return ts.timestamp() - self.clock.wall()

    # -- Task, Parallel, Map: the work with Retry and Catch ---------------------------

    async def _with_retry(self, name: str, state: dict[str, Any], raw: Any,
                          ctx: dict[str, Any]) -> tuple[str | None, Any]:
        retriers = state.get("Retry", [])
        attempts = [0] * len(retriers)
        while True:
            try:
                eff = self._input(state, raw, ctx)
                result = await self._work(name, state, eff, ctx)
                if "ResultSelector" in state:
                    result = render_template(state["ResultSelector"], result, ctx,
                                             "ResultSelector")
                out = apply_result_path(state.get("ResultPath", "$"), raw, result)
                out = self._output(state, out, ctx)
            except StatesError as exc:
                i = next((i for i, r in enumerate(retriers)
                          if errors.matches(r["ErrorEquals"], exc.error)), None)
                if i is not None and attempts[i] < retriers[i].get("MaxAttempts", 3):
                    delay = self._backoff(retriers[i], attempts[i])
                    attempts[i] += 1
                    ctx = {**ctx, "State": {**ctx["State"], "RetryCount": sum(attempts)}}
                    await self._emit("TaskRetried", name=name, error=exc.error, cause=exc.cause,
                                     attempt=attempts[i], delaySeconds=delay)
                    await self._sleep(delay)
                    continue
                catcher = next((c for c in state.get("Catch", [])
                                if errors.matches(c["ErrorEquals"], exc.error)), None)
                if catcher is None:
                    if state["Type"] != "Task":  # a Task already said TaskFailed
                        await self._emit(f"{state['Type']}StateFailed", name=name,
                                         error=exc.error, cause=exc.cause)
                    raise
                caught = {"Error": exc.error, "Cause": exc.cause}
                out = apply_result_path(catcher.get("ResultPath", "$"), raw, caught)
                await self._emit("TaskCaught", name=name, error=exc.error, cause=exc.cause,
                                 next=catcher["Next"])
                await self._emit(f"{state['Type']}StateExited", name=name, output=out)
                return str(catcher["Next"]), out
            await self._emit(f"{state['Type']}StateExited", name=name, output=out)
            return (None if state.get("End") else str(state["Next"])), out

    def _backoff(self, retrier: dict[str, Any], attempt: int) -> float:
        delay = float(retrier.get("IntervalSeconds", 1)) * float(
            retrier.get("BackoffRate", 2.0)) ** attempt
        if "MaxDelaySeconds" in retrier:
            delay = min(delay, float(retrier["MaxDelaySeconds"]))
        if retrier.get("JitterStrategy") == "FULL":
            delay = self.rng.uniform(0, delay)
        return delay

    async def _work(self, name: str, state: dict[str, Any], eff: Any,
                    ctx: dict[str, Any]) -> Any:
        kind = state["Type"]
        if kind == "Task":
            return await self._task(name, state, eff, ctx)
        if kind == "Parallel":
            data = (render_template(state["Parameters"], eff, ctx, "Parameters")
                    if "Parameters" in state else eff)
            await self._emit("ParallelStateStarted", name=name)
            out = await self._all([functools.partial(self._machine, b, data, _outer(ctx),
                                                     top=False)
                                   for b in state["Branches"]], 0)
            self._bounded(out, name)
            await self._emit("ParallelStateSucceeded", name=name)
            return out
        return await self._map(name, state, eff, ctx)

    async def _task(self, name: str, state: dict[str, Any], eff: Any,
                    ctx: dict[str, Any]) -> Any:
        resource = state["Resource"]
        args = (render_template(state["Parameters"], eff, ctx, "Parameters")
                if "Parameters" in state else eff)
        if not isinstance(args, dict):
            raise StatesError(errors.RUNTIME, f"the input of Task {name!r} must be a JSON object "
                              "(a function takes it as keyword arguments), got "
                              f"{type(args).__name__}; shape it with InputPath or Parameters")
        body = json.dumps(args).encode()
        if len(body) > self.max_payload:
            raise StatesError(errors.DATA_LIMIT, f"the input of Task {name!r} is {len(body)} "
                              f"bytes; the limit is {self.max_payload}")
        timeout = state.get("TimeoutSeconds")
        if "TimeoutSecondsPath" in state:
            timeout = select(state["TimeoutSecondsPath"], eff, ctx, "TimeoutSecondsPath")
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise StatesError(errors.RUNTIME, "TimeoutSecondsPath must select a positive "
                                  "number")
        await self._emit("TaskScheduled", name=name, resource=resource, input=args,
                         timeoutSeconds=timeout)
        call: Awaitable[Reply] = self.invoker.invoke(resource, body)
        remaining = None if self.deadline is None else self.deadline - self.clock.wall()
        execution_bound = remaining is not None and (timeout is None or remaining < timeout)
        limit = remaining if execution_bound else timeout
        try:
            reply = await (self._within(_co(call), limit) if limit is not None else call)
        except _TimedOut:
            if execution_bound:
                raise
            cause = f"Task {name!r} did not finish within TimeoutSeconds ({timeout} s)"
            await self._emit("TaskTimedOut", name=name, resource=resource,
                             error=errors.TIMEOUT, cause=cause)
            raise StatesError(errors.TIMEOUT, cause) from None
        if reply.status != 200:
            exc = task_error(resource, reply)
            await self._emit("TaskFailed", name=name, resource=resource, error=exc.error,
                             cause=exc.cause)
            raise exc
        if len(reply.body) > self.max_payload:
            raise StatesError(errors.DATA_LIMIT, f"function {resource!r} returned "
                              f"{len(reply.body)} bytes; the limit is {self.max_payload}")
        try:
            result = json.loads(reply.body)
        except ValueError:
            raise StatesError(errors.TASK_FAILED, f"function {resource!r} did not return "
                              "JSON") from None
        await self._emit("TaskSucceeded", name=name, resource=resource, output=result)
        return result

    async def _map(self, name: str, state: dict[str, Any], eff: Any,
                   ctx: dict[str, Any]) -> Any:
        items = select(state.get("ItemsPath", "$"), eff, ctx, "ItemsPath")
        if not isinstance(items, list):
            raise StatesError(errors.RUNTIME, f"the ItemsPath of Map {name!r} must select an "
                              f"array, got {type(items).__name__}")
        proc = state.get("ItemProcessor") or state["Iterator"]
        selector = state.get("ItemSelector", state.get("Parameters"))
        await self._emit("MapStateStarted", name=name, length=len(items))

        async def one(index: int, item: Any) -> Any:
            mctx = {**ctx, "Map": {"Item": {"Index": index, "Value": item}}}
            data = render_template(selector, eff, mctx, "ItemSelector") if selector else item
            await self._emit("MapIterationStarted", name=name, index=index)
            try:
                out = await self._machine(proc, data, _outer(ctx), top=False)
            except StatesError as exc:
                await self._emit("MapIterationFailed", name=name, index=index,
                                 error=exc.error, cause=exc.cause)
                raise
            await self._emit("MapIterationSucceeded", name=name, index=index)
            return out

        out = await self._all([functools.partial(one, i, v) for i, v in enumerate(items)],
                              int(state.get("MaxConcurrency", 0)))
        self._bounded(out, name)
        await self._emit("MapStateSucceeded", name=name)
        return out

    async def _all(self, works: list[Callable[[], Coroutine[Any, Any, Any]]],
                   limit: int) -> list[Any]:
        """Run all, at most ``limit`` at once (0: no limit); the first failure cancels
        the rest and is raised. Each work is created only when it may start."""
        sem = asyncio.Semaphore(limit) if limit > 0 else None

        async def gated(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
            if sem is None:
                return await work()
            async with sem:
                return await work()

        tasks = [asyncio.ensure_future(gated(w)) for w in works]
        if not tasks:
            return []
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            return [t.result() for t in tasks]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _bounded(self, value: Any, name: str) -> None:
        size = len(json.dumps(value))
        if size > self.max_payload:
            raise StatesError(errors.DATA_LIMIT, f"the output of {name!r} is {size} bytes; "
                              f"the limit is {self.max_payload}")


def _outer(ctx: dict[str, Any]) -> dict[str, Any]:
    """The context a branch or iteration starts from: no enclosing State or Map item."""
    return {k: v for k, v in ctx.items() if k not in ("State", "Map")}


async def _co(aw: Awaitable[T]) -> T:
    return await aw
