"""The activator's bounded queue over HTTP (README: "503 not ready or overloaded").

A server started with ``serve --queue-limit 2`` and a function that takes one request
at a time on at most one pod: of six requests sent together while the pod is busy, one
runs, two wait for it, and the three over the limit get 503 with the error code
``Overloaded`` at once. Counts and codes are asserted, never timings.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration

QUEUE_LIMIT = 2


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("queue-state")
    with ServerProcess(state, extra_args=("--queue-limit", str(QUEUE_LIMIT))) as srv:
        yield srv


def test_requests_over_the_queue_limit_get_503_overloaded(small_queue: ServerProcess) -> None:
    srv = small_queue
    spec = {"timeoutSeconds": 120,
            "scaling": {"containerConcurrency": 1, "minScale": 1, "maxScale": 1}}
    created = srv.deploy("slow", FIXTURES / "sleep.py", spec=spec)
    assert created.status_code == 201, created.text
    wait_for(lambda: srv.get("slow")["status"].get("readyReplicas", 0) == 1, 120, "1 ready pod")
    url = srv.url + "/function/slow"

    def call(_: int) -> requests.Response:
        # 8 s each: the three that fit take 24 s; all six arrive while the first runs.
        return requests.post(url, json={"ms": 8000}, timeout=120)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * (1 + QUEUE_LIMIT) + [503] * (6 - 1 - QUEUE_LIMIT), codes
    for r in answers:
        if r.status_code == 503:
            err = r.json()["error"]
            assert err["code"] == "Overloaded", err
            assert f"{QUEUE_LIMIT} requests waiting" in err["message"], err
        else:
            assert r.json() == {"slept_ms": 8000}

