"""The one Python client of allinone's HTTP API.

Every program that speaks the API uses this module: the CLI, ``allinone.testing``
(the integration tests' :class:`~allinone.testing.ServerProcess`), the locust scenarios
and the benchmarks. Paths, the multipart upload, the bearer token, error decoding and
the wait-until-Ready loop exist here once.

Invariants:

- A non-2xx answer becomes an :class:`ApiError` subclass built from the error body
  ``{"error": {"code", "message"}}`` (or the first 300 characters of a body that is not
  one): :class:`NotFound` (404), :class:`Conflict` (409), :class:`Invalid` (400, 413,
  415, 422), :class:`Unauthorized` (401, 403), else :class:`ApiError`. A server that
  cannot be reached raises :class:`Unreachable`, whose message says what to check.
- The ``raw_*`` methods return the :class:`requests.Response` unchecked, for callers
  that test the HTTP contract itself (status codes of bad input); everything else
  checks.
- A local token (the state directory's token file) is only ever sent to a loopback
  server (:func:`token_for`).
- Proxies from the environment are ignored (``trust_env = False``): the server is
  local or named explicitly, never reached through a proxy.
- Waits poll with ``time.sleep``; under locust (gevent-patched) that yields to other
  greenlets, so the same loop serves the scenarios.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from allinone import auth, objects

DEFAULT_SERVER = "http://127.0.0.1:8080"
API = "/api/v1"
NS = f"{API}/namespaces/{objects.NAMESPACE}"


class ApiError(Exception):
    """An answer that is not a success, or a server that cannot be reached."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Invalid(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Unreachable(ApiError):
    pass


class BuildFailed(ApiError):
    """The function's build failed (phase Failed for the generation waited for)."""


class Timeout(ApiError):
    """A wait did not see its state in time."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 400: Invalid,
                                         413: Invalid, 415: Invalid, 422: Invalid,
                                         401: Unauthorized, 403: Unauthorized}


def error_from(resp: requests.Response) -> ApiError:
    """The typed error of a failed answer, from its error body."""
    try:
        err = resp.json()["error"]
        message, code = str(err.get("message") or ""), str(err.get("code") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, code = resp.text[:300], ""
    return _BY_STATUS.get(resp.status_code, ApiError)(message or resp.reason or "error",
                                                       resp.status_code, code)


_METRIC_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+'
                          r'(?P<value>\S+)$')


def parse_metric(text: str, metric: str, function: str) -> float | None:
    """The value of ``metric{function="..."}`` in Prometheus text; None when absent."""
    want = f'function="{function}"'
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m and m["name"] == metric and want in m["labels"].split(","):
            try:
                return float(m["value"])
            except ValueError:
                return None
    return None


def ok(resp: requests.Response) -> requests.Response:
    """The answer itself when it is a success; its typed error otherwise."""
    if not resp.ok:
        raise error_from(resp)
    return resp


def token_for(server: str, given: str | None, state_dir: Path) -> str | None:
    """The token to send: ``given`` (--token / $ALLINONE_TOKEN), else the local token
    file when the server is on this machine's loopback (never sent anywhere else)."""
    if given:
        return given
    host = urllib.parse.urlsplit(server).hostname or ""
    if auth.is_loopback(host):
        return auth.read_token(state_dir.expanduser() / auth.TOKEN_FILENAME)
    return None


def read_source(path: str | Path) -> tuple[str, bytes]:
    """A file as is; a directory zipped in memory (entries relative to it)."""
    p = Path(path)
    if p.is_dir():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(p.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts:
                    zf.write(f, f.relative_to(p).as_posix())
        return p.name + ".zip", buf.getvalue()
    if not p.is_file():
        raise Invalid(f"no such file: {path}")
    return p.name, p.read_bytes()


def is_current(fn: dict[str, Any]) -> bool:
    """Whether the status describes the function's latest generation."""
    return bool(fn.get("status", {}).get("observedGeneration") == fn["metadata"]["generation"])


def poll(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``cond`` every ``interval`` s until it returns something true, and return
    that; :class:`Timeout` after ``timeout`` s. The one wait loop of every API user."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class Client:
    """Sync client (requests, one keep-alive session)."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None,
                 timeout: float = 120.0) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # -- the wire ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One request, unchecked; only an unreachable server raises."""
        kw.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, self.server + path, **kw)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # requests' text nests urllib3's; the OS's reason is the part a person needs.
            m = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
            reason = m.group(0) if m else type(exc).__name__
            raise Unreachable(f"cannot reach allinone at {self.server} ({reason}): is "
                              "`allinone serve` running? (set --server or ALLINONE_SERVER)"
                              ) from None

    def checked(self, method: str, path: str, **kw: Any) -> requests.Response:
        return ok(self.request(method, path, **kw))

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.checked(method, path, **kw).json()

    def _items(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("GET", path, params=params)["items"]
        return items

    # -- functions --------------------------------------------------------------------

    def raw_create(self, name: str, source: tuple[str, bytes],
                   spec: dict[str, Any] | None = None) -> requests.Response:
        data = {"name": name, **({"spec": json.dumps(spec)} if spec is not None else {})}
        return self.request("POST", f"{API}/functions", data=data, files={"source": source})

    def raw_update(self, name: str, source: tuple[str, bytes] | None = None,
                   spec: dict[str, Any] | None = None) -> requests.Response:
        data = {"spec": json.dumps(spec)} if spec is not None else {}
        files = {"source": source} if source else None
        return self.request("PUT", f"{API}/functions/{name}", data=data, files=files)

    def create(self, name: str, source: tuple[str, bytes],
               spec: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = ok(self.raw_create(name, source, spec)).json()
        return out

    def update(self, name: str, source: tuple[str, bytes] | None = None,
               spec: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = ok(self.raw_update(name, source, spec)).json()
        return out

    def deploy(self, name: str, source: tuple[str, bytes] | Path | None = None,
               spec: dict[str, Any] | None = None, wait: bool = True,
               timeout: float = 300.0) -> dict[str, Any]:
        """Create the function, or update it when it exists; then wait until Ready."""
        src = read_source(source) if isinstance(source, Path) else source
        if self.find(name) is None:
            if src is None:
                raise Invalid("a source file is required to deploy a new function")
            fn = self.create(name, src, spec)
        else:
            fn = self.update(name, src, spec)
        return self.wait_ready(name, fn["metadata"]["generation"], timeout) if wait else fn

    def get(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", f"{API}/functions/{name}")
        return out

    def find(self, name: str) -> dict[str, Any] | None:
        try:
            return self.get(name)
        except NotFound:
            return None

    def functions(self) -> list[dict[str, Any]]:
        return self._items(f"{API}/functions")

    def delete(self, name: str, missing_ok: bool = False) -> None:
        self._delete(f"{API}/functions/{name}", missing_ok)

    def _delete(self, path: str, missing_ok: bool) -> None:
        resp = self.request("DELETE", path)
        if not (missing_ok and resp.status_code == 404):
            ok(resp)

    def logs(self, name: str) -> str:
        return self.checked("GET", f"{API}/functions/{name}/logs").text

    def replicaset(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", f"{NS}/replicasets/{name}")
        return out

    def pods(self, name: str) -> list[dict[str, Any]]:
        return self._items(f"{NS}/pods", {"function": name})

    def metrics(self) -> str:
        return self.checked("GET", "/metrics").text

    def metric(self, metric: str, function: str, absent: float | None = 0.0) -> float | None:
        """One sample of ``metric{function=...}``; ``absent`` for a series not exported
        yet (counters and histograms appear at their first observation); None when
        /metrics cannot be read."""
        try:
            value = parse_metric(self.metrics(), metric, function)
        except ApiError:
            return None
        return absent if value is None else value

    # -- triggers ---------------------------------------------------------------------

    def raw_create_trigger(self, name: str, spec: dict[str, Any]) -> requests.Response:
        return self.request("POST", f"{API}/triggers", json={"name": name, "spec": spec})

    def create_trigger(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = ok(self.raw_create_trigger(name, spec)).json()
        return out

    def update_trigger(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.json("PUT", f"{API}/triggers/{name}", json={"spec": spec})
        return out

    def trigger(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", f"{API}/triggers/{name}")
        return out

    def triggers(self) -> list[dict[str, Any]]:
        return self._items(f"{API}/triggers")

    def delete_trigger(self, name: str, missing_ok: bool = False) -> None:
        self._delete(f"{API}/triggers/{name}", missing_ok)

    def trigger_events(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._items(f"{API}/triggers/{name}/events", {"limit": limit})

    # -- workflows --------------------------------------------------------------------

    def deploy_workflow(self, name: str, definition: Any) -> dict[str, Any]:
        """Create the workflow, or update its definition when it exists."""
        try:
            out: dict[str, Any] = self.json("POST", f"{API}/workflows",
                                            json={"name": name, "definition": definition})
        except Conflict:
            out = self.json("PUT", f"{API}/workflows/{name}", json={"definition": definition})
        return out

    def workflow(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", f"{API}/workflows/{name}")
        return out

    def workflows(self) -> list[dict[str, Any]]:
        return self._items(f"{API}/workflows")

    def delete_workflow(self, name: str, missing_ok: bool = False) -> None:
        self._delete(f"{API}/workflows/{name}", missing_ok)

    def start_workflow(self, name: str, body: Any = None, *, data: bytes | None = None,
                       wait: bool = True, timeout: float | None = None) -> requests.Response:
        """Start an execution: its outcome when ``wait`` (200), else its id (202);
        the answer unchecked (a failed execution is a 200 too: read its status)."""
        payload = data if data is not None else json.dumps({} if body is None else body).encode()
        return self.request("POST", f"/workflow/{name}" + ("" if wait else "?mode=async"),
                            data=payload, headers={"Content-Type": "application/json"},
                            timeout=timeout or self.timeout)

    def executions(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._items(f"{API}/workflows/{name}/executions", {"limit": limit})

    def execution(self, name: str, execution_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET",
                                        f"{API}/workflows/{name}/executions/{execution_id}")
        return out

    # -- invoking ---------------------------------------------------------------------

    def invoke(self, name: str, body: Any = None, *, data: bytes | None = None,
               timeout: float | None = None) -> requests.Response:
        """POST to the function's trigger; the answer unchecked (its status is the point)."""
        payload = data if data is not None else json.dumps({} if body is None else body).encode()
        return self.request("POST", f"/function/{name}", data=payload,
                            headers={"Content-Type": "application/json"},
                            timeout=timeout or self.timeout)

    def call(self, name: str, body: Any = None, *, data: bytes | None = None) -> Any:
        """Invoke and return the decoded result; a failed call raises its typed error."""
        return ok(self.invoke(name, body, data=data)).json()

    # -- waiting ----------------------------------------------------------------------

    def wait(self, cond: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
        return poll(cond, timeout, what, interval)

    def wait_built(self, name: str, generation: int | None = None, timeout: float = 300.0,
                   interval: float = 0.1,
                   on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The function once its build of ``generation`` (default: the latest) ended,
        Ready or Failed. ``on_poll`` sees every reading (the CLI draws its dots)."""
        def done() -> dict[str, Any] | None:
            fn = self.get(name)
            st = fn.get("status", {})
            want = fn["metadata"]["generation"] if generation is None else generation
            if st.get("observedGeneration") == want and st.get("phase") in (
                    objects.READY, objects.FAILED):
                return fn
            if on_poll is not None:
                on_poll(fn)
            return None
        out: dict[str, Any] = self.wait(done, timeout, f"the build of {name}", interval)
        return out

    def wait_ready(self, name: str, generation: int | None = None, timeout: float = 300.0,
                   interval: float = 0.1) -> dict[str, Any]:
        """As :meth:`wait_built`; a failed build raises :class:`BuildFailed`."""
        fn = self.wait_built(name, generation, timeout, interval)
        if fn["status"]["phase"] == objects.FAILED:
            raise BuildFailed(f"build of {name} failed: {fn['status'].get('message')}")
        return fn

    def wait_replicas(self, name: str, ready: int, desired: int | None = None,
                      timeout: float = 120.0, interval: float = 0.1,
                      no_pods: bool = False) -> dict[str, Any]:
        """The function once it has ``ready`` ready replicas (and ``desired`` desired;
        with ``no_pods``, also no Pod object left: at zero, Docker idle)."""
        def there() -> dict[str, Any] | None:
            fn = self.get(name)
            st = fn.get("status", {})
            ok = st.get("readyReplicas", 0) == ready and (
                desired is None or st.get("desiredReplicas", 0) == desired)
            return fn if ok and not (no_pods and self.pods(name)) else None
        out: dict[str, Any] = self.wait(there, timeout, f"{name} at {ready} ready replicas",
                                        interval)
        return out

    def ready_pod(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """The status of a ready, running pod of ``name`` (waits for one)."""
        def find() -> dict[str, Any] | None:
            for pod in self.pods(name):
                st: dict[str, Any] = pod.get("status", {})
                if st.get("ready") and st.get("phase") == "Running":
                    return st
            return None
        out: dict[str, Any] = self.wait(find, timeout, f"a ready pod of {name}")
        return out
