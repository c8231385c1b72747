"""DockerRuntime.pause tries again when runc's freezer gives up on a busy container."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from docker.errors import APIError

from allinone.runtime import docker as docker_runtime
from allinone.runtime.docker import PAUSE_TRIES, DockerRuntime


def api_error(message: str) -> APIError:
    response = requests.Response()
    response.status_code = 500
    return APIError("500 Server Error", response=response, explanation=message)


class FakeApi:
    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.calls = 0

    def pause(self, container_id: str) -> None:
        self.calls += 1
        if self.failures:
            raise api_error(self.failures.pop(0))


def runtime(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> tuple[DockerRuntime, list[float]]:
    slept: list[float] = []
    monkeypatch.setattr(docker_runtime, "time", SimpleNamespace(sleep=slept.append))
    client: Any = SimpleNamespace(api=api)
    return DockerRuntime("test", client=client), slept


FREEZE = "Cannot pause container c1: OCI runtime pause failed: unable to freeze: unknown"


@pytest.mark.parametrize("failures, calls, sleeps", [
    ([], 1, []),
    ([FREEZE], 2, [0.05]),
    ([FREEZE] * (PAUSE_TRIES - 1), PAUSE_TRIES, [0.05, 0.1, 0.2]),
])
def test_a_pause_the_freezer_gave_up_on_is_tried_again(
        failures: list[str], calls: int, sleeps: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(failures)
    rt, slept = runtime(api, monkeypatch)
    asyncio.run(rt.pause("c1"))
    assert api.calls == calls and slept == sleeps


@pytest.mark.parametrize("failures, calls", [
    ([FREEZE] * PAUSE_TRIES, PAUSE_TRIES),            # still failing: given up
    (["Container c1 is not running"], 1),              # not the freezer: at once
])
def test_other_pause_errors_and_the_last_try_raise(
        failures: list[str], calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(failures)
    rt, _ = runtime(api, monkeypatch)
    with pytest.raises(APIError):
        asyncio.run(rt.pause("c1"))
    assert api.calls == calls
