"""How the workflow engine calls functions: a small Protocol and its in-memory twin.

In the server the :class:`~allinone.activator.activator.Activator` is the invoker
(``invoke(function, body) -> Result(status, body)``), so a Task state scales from zero,
is counted and autoscaled like any HTTP call. :class:`FakeInvoker` answers exactly as
the activator and the runtime shim do (200 JSON; 404 ``NotFound``; 500 ``FunctionError``
with ``"Type: message"``) from plain Python callables, for unit tests.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from allinone.activator.activator import error_body
from allinone.clock import Clock


class Reply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class Invoker(Protocol):
    async def invoke(self, function: str, body: bytes) -> Reply: ...


@dataclass(frozen=True)
class FakeReply:
    status: int
    body: bytes


@dataclass
class FakeInvoker:
    """Functions as callables ``f(**kwargs)`` (sync or async); records every call."""

    functions: dict[str, Callable[..., Any]]
    clock: Clock | None = None
    calls: list[tuple[str, Any, float]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def invoke(self, function: str, body: bytes) -> FakeReply:
        args = json.loads(body or b"{}")
        self.calls.append((function, args, self.clock.now() if self.clock else 0.0))
        fn = self.functions.get(function)
        if fn is None:
            return FakeReply(404, error_body("NotFound", f"no function named {function!r}"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            out = fn(**args)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            text = str(exc)
            msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            return FakeReply(500, error_body("FunctionError", msg))
        finally:
            self.in_flight -= 1
        return FakeReply(200, json.dumps(out).encode())
