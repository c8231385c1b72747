"""allinone.client: typed errors from the error body, the token rule, the one wait loop."""

from __future__ import annotations

import json

import pytest
import requests

from allinone import client as c


def answer(status: int, body: bytes) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    return resp


@pytest.mark.parametrize(("status", "kind"), [
    (404, c.NotFound), (409, c.Conflict), (400, c.Invalid), (413, c.Invalid),
    (422, c.Invalid), (401, c.Unauthorized), (403, c.Unauthorized), (500, c.ApiError),
    (503, c.ApiError),
])
def test_error_type_follows_the_status(status: int, kind: type[c.ApiError]) -> None:
    body = json.dumps({"error": {"code": "Why", "message": "what to fix"}}).encode()
    err = c.error_from(answer(status, body))
    assert type(err) is kind
    assert (err.status, err.code, err.message) == (status, "Why", "what to fix")
    assert str(err) == f"what to fix (HTTP {status})"


def test_a_body_that_is_not_an_error_body_is_shown_as_text() -> None:
    err = c.error_from(answer(502, b"<html>bad gateway</html>" + b"x" * 400))
    assert err.code == ""
    assert err.message.startswith("<html>bad gateway") and len(err.message) == 300


def test_poll_returns_the_first_true_value() -> None:
    values = iter([None, 0, {"ready": 1}])
    assert c.poll(lambda: next(values), 60, "x", interval=0) == {"ready": 1}


def test_poll_times_out_with_the_last_value() -> None:
    with pytest.raises(c.Timeout, match=r"waiting for the pod \(last: \[\]\)"):
        c.poll(lambda: [], -1, "the pod", interval=0)


def test_an_unreachable_server_says_what_to_check() -> None:
    from allinone.testing import free_port
    cl = c.Client(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(c.Unreachable, match=r"\(\[Errno 111\] Connection refused\): is `allinone"):
        cl.get("f")
