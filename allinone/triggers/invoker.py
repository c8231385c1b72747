"""How a trigger reaches its target: small Protocols with in-memory twins.

Functions are called through the activator (``Activator.invoke(name, body)`` answers a
``Result(status, body)``), so trigger traffic counts toward autoscaling exactly like
HTTP traffic. Workflows are started through :class:`WorkflowRunner`, which the
workflow engine provides; until it is wired, :class:`NoWorkflows` answers a clear 501.
A delivery succeeds when the target answers 200.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class _HasStatusBody(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class FunctionInvoker(Protocol):
    async def invoke(self, function: str, body: bytes) -> _HasStatusBody: ...


class WorkflowRunner(Protocol):
    async def run(self, workflow: str, input: Any) -> _HasStatusBody:
        """Start an execution with ``input`` and wait for it: 200 with the output as JSON,
        or an error status with ``{"error": {"code", "message"}}``."""
        ...


def error_answer(status: int, code: str, message: str) -> Answer:
    return Answer(status, json.dumps({"error": {"code": code, "message": message}}).encode())


class NoWorkflows:
    async def run(self, workflow: str, input: Any) -> Answer:
        return error_answer(501, "NotImplemented",
                            f"workflow target {workflow!r}: this server has no workflow engine "
                            "wired to triggers yet; target a function instead")


class ExecutionStarter(Protocol):
    """The part of the workflow engine a trigger uses (``WorkflowRunner.start_execution``):
    the API view of the execution once it has finished; LookupError for no workflow."""

    async def start_execution(self, workflow: str, execution_input: Any, *,
                              wait: bool) -> dict[str, Any]: ...


class EngineWorkflows:
    """:class:`WorkflowRunner` over the workflow engine: one execution per event.

    A succeeded execution answers 200 with its output (what a sink writes); a failed,
    timed-out or aborted one answers 422 with its error and cause, which is not retried:
    the engine has already applied the workflow's own Retry and Catch.
    """

    def __init__(self, engine: ExecutionStarter) -> None:
        self.engine = engine

    async def run(self, workflow: str, input: Any) -> Answer:
        try:
            view = await self.engine.start_execution(workflow, input, wait=True)
        except LookupError:
            return error_answer(404, "NotFound", f"no workflow named {workflow!r}; deploy it "
                                "with `allinone workflow deploy`")
        if view.get("status") == "SUCCEEDED":
            return Answer(200, json.dumps(view.get("output")).encode())
        return error_answer(
            422, str(view.get("error") or "ExecutionFailed"),
            f"execution {view.get('executionId')} of {workflow!r} ended {view.get('status')}: "
            f"{view.get('cause') or ''}".rstrip(": "))


class Targets:
    """Dispatches an event to a trigger's target."""

    def __init__(self, functions: FunctionInvoker, workflows: WorkflowRunner | None = None
                 ) -> None:
        self.functions = functions
        self.workflows: WorkflowRunner = workflows or NoWorkflows()

    async def call(self, target: dict[str, str], event: dict[str, Any]) -> _HasStatusBody:
        if "function" in target:
            return await self.functions.invoke(target["function"], json.dumps(event).encode())
        return await self.workflows.run(target["workflow"], event)


class MemoryInvoker:
    """The activator's twin: answers with ``handler(name, kwargs)`` and records calls."""

    def __init__(self, handler: Callable[[str, dict[str, Any]], Awaitable[Answer]]) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def invoke(self, function: str, body: bytes) -> Answer:
        kwargs = json.loads(body)
        self.calls.append((function, kwargs))
        return await self.handler(function, kwargs)
