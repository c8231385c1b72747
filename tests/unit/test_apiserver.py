"""The HTTP API routes over Sanic's ASGI test client, the in-memory store and a fake
activator: status codes, error bodies ``{"error": {"code", "message"}}``, what is
stored, and that a rejected request stores nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sanic import Sanic

from allinone import objects
from allinone.activator.activator import Result
from allinone.apiserver.routes import ApiDeps, make_blueprint
from allinone.app import _on_error
from allinone.builder.sources import SourceStore
from allinone.config import Settings
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore

ADD = b"def run(x, y):\n    return x + y\n"
_names = itertools.count()


class FakeActivator:
    """What the routes use of the activator: ready counts and invoke."""

    def __init__(self) -> None:
        self.invoked: list[tuple[str, bytes]] = []

    def ready_pods(self, function: str) -> int:
        return 2 if function == "add" else 0

    async def invoke(self, function: str, body: bytes) -> Result:
        self.invoked.append((function, body))
        return Result(200, b'{"result": 8}')


class Api:
    def __init__(self, tmp: Path) -> None:
        self.store = MemoryStore()
        self.settings = Settings(state_dir=tmp, max_upload_bytes=64 * 1024)
        self.sources = SourceStore(tmp / "sources")
        self.activator = FakeActivator()
        self.app: Sanic[Any, Any] = Sanic(f"api-test-{next(_names)}")
        self.app.blueprint(make_blueprint())
        self.app.error_handler.add(Exception, _on_error)
        self.app.ctx.settings = self.settings
        self.app.ctx.deps = ApiDeps(
            settings=self.settings, store=self.store, sources=self.sources,
            functions=Informer(self.store, objects.FUNCTIONS_PREFIX),
            activator=self.activator,  # type: ignore[arg-type]
            metrics=Metrics(), autoscaler_status=lambda name: {"desired": 0},
            live_logs=self._live_logs)

    async def _live_logs(self, name: str) -> str:
        return f"live output of {name}\n"

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        _, response = await getattr(self.app.asgi_client, method)(path, **kw)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.status, response.json
        return response.status, response.text

    async def create(self, name: str = "add", source: bytes = ADD, filename: str = "add.py",
                     spec: object = None) -> tuple[int, Any]:
        data = {"name": name}
        if spec is not None:
            data["spec"] = json.dumps(spec)
        return await self.request("post", "/api/v1/functions", data=data,
                                  files={"source": (filename, source)})

    async def stored(self) -> list[str]:
        items, _ = await self.store.list(objects.PREFIX + "/")
        return sorted(o["metadata"]["name"] + ":" + o["kind"] for o in items)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    a = Api(tmp_path)
    yield a
    Sanic._app_registry.pop(a.app.name, None)


def error(body: Any, code: str) -> str:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert "Traceback" not in message
    return message


async def test_create_stores_function_and_replicaset(api: Api) -> None:
    status, body = await api.create(spec={"scaling": {"initialScale": 1}})
    assert status == 201, body
    assert body["metadata"]["name"] == "add"
    assert body["status"]["phase"] == objects.BUILDING
    assert body["spec"]["source"]["filename"] == "add.py"
    assert await api.stored() == ["add:Function", "add:ReplicaSet"]
    rs = await api.store.get(objects.replicaset_key("add"))
    assert rs["spec"]["replicas"] == 1
    assert api.sources.get(body["spec"]["source"]["sha256"]) == ADD


async def test_missing_handler_is_400_not_500(api: Api) -> None:
    # Hand-made bug "the apiserver answers 500 instead of 400 for a missing handler".
    status, body = await api.create(source=b"def other():\n    return 1\n")
    assert status == 400, body
    message = error(body, "BadSource")
    assert "does not define 'run'" in message and "add.py" in message
    assert await api.stored() == []


@pytest.mark.parametrize(("form", "files", "status", "code", "words"), [
    ({"name": "Bad_Name"}, {"source": ("f.py", ADD)}, 400, "BadRequest", ["Bad_Name"]),
    ({}, {"source": ("f.py", ADD)}, 400, "BadRequest", ["name is required"]),
    ({"name": "nosrc"}, None, 400, "BadSource", ["field named 'source'"]),
    ({"name": "badjson", "spec": "{"}, {"source": ("f.py", ADD)}, 400, "BadSpec",
     ["spec is not valid JSON"]),
    ({"name": "field", "spec": '{"maxscale": 3}'}, {"source": ("f.py", ADD)}, 400,
     "BadRequest", ["maxscale"]),
    ({"name": "syntax"}, {"source": ("f.py", b"def run(:\n")}, 400, "BadSource",
     ["f.py line 1"]),
    ({"name": "kind"}, {"source": ("f.txt", ADD)}, 400, "BadSource",
     ["'f.txt' is neither a .py file nor a .zip"]),
    ({"name": "big"}, {"source": ("f.py", b"#" * 65 * 1024)}, 413, "TooLarge",
     ["the limit is 0.1 MiB"]),
])
async def test_bad_create_is_rejected_and_stores_nothing(
        api: Api, form: dict[str, str], files: Any, status: int, code: str,
        words: list[str]) -> None:
    got, body = await api.request("post", "/api/v1/functions", data=form, files=files)
    assert got == status, body
    message = error(body, code)
    for word in words:
        assert word in message, message
    assert await api.stored() == []


@pytest.mark.parametrize(("content_type", "body", "words"), [
    ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition\r\n\r\nx\r\n--B--\r\n",
     ["multipart/form-data body is malformed", "Content-Disposition"]),
    ("multipart/form-data", b"--B\r\n\r\n", ["no boundary"]),
])
async def test_malformed_multipart_is_400_without_a_traceback(
        api: Api, caplog: pytest.LogCaptureFixture, content_type: str, body: bytes,
        words: list[str]) -> None:
    for method, path in (("post", "/api/v1/functions"), ("put", "/api/v1/functions/add")):
        got, answer = await api.request(method, path, content=body,
                                        headers={"content-type": content_type})
        assert got == 400, answer
        message = error(answer, "BadRequest")
        for word in words:
            assert word in message, message
    assert "Failed when parsing form" not in caplog.text
    assert await api.stored() == []


async def test_duplicate_is_409_and_keeps_the_first(api: Api) -> None:
    assert (await api.create())[0] == 201
    status, body = await api.create(source=b"def run():\n    return 2\n")
    assert status == 409
    assert "already exists" in error(body, "AlreadyExists")
    fn = await api.store.get(objects.function_key("add"))
    assert api.sources.get(fn["spec"]["source"]["sha256"]) == ADD


async def test_list_and_get_show_replica_counts(api: Api) -> None:
    await api.create()
    await api.create("other")
    status, body = await api.request("get", "/api/v1/functions")
    assert status == 200
    assert [f["metadata"]["name"] for f in body["items"]] == ["add", "other"]
    status, fn = await api.request("get", "/api/v1/functions/add")
    assert status == 200
    assert fn["status"]["readyReplicas"] == 2
    assert fn["status"]["desiredReplicas"] == 0
    assert fn["status"]["autoscaler"] == {"desired": 0}
    status, body = await api.request("get", "/api/v1/functions/nope")
    assert status == 404 and "no function named 'nope'" in error(body, "NotFound")


async def test_put_json_spec_makes_a_new_generation(api: Api) -> None:
    await api.create()
    status, fn = await api.request("put", "/api/v1/functions/add",
                                   json={"spec": {"timeoutSeconds": 5}})
    assert status == 200, fn
    assert fn["spec"]["timeoutSeconds"] == 5
    assert fn["metadata"]["generation"] == 2
    assert fn["status"]["phase"] == objects.BUILDING
    # The same spec again changes nothing: no new generation.
    status, fn = await api.request("put", "/api/v1/functions/add",
                                   json={"spec": {"timeoutSeconds": 5}})
    assert status == 200 and fn["metadata"]["generation"] == 2


async def test_put_multipart_source_replaces_the_source(api: Api) -> None:
    await api.create()
    new = b"def run(x, y):\n    return x * y\n"
    status, fn = await api.request("put", "/api/v1/functions/add",
                                   files={"source": ("add.py", new)})
    assert status == 200, fn
    assert fn["metadata"]["generation"] == 2
    assert api.sources.get(fn["spec"]["source"]["sha256"]) == new


@pytest.mark.parametrize(("kw", "status", "code", "words"), [
    ({"json": {"nospec": 1}}, 400, "BadRequest", ['{"spec": {...}}']),
    ({"data": {}}, 400, "BadRequest", ["nothing to update"]),
    ({"json": {"spec": {"handler": "missing"}}}, 400, "BadSource", ["'missing'"]),
    ({"json": {"spec": {"scaling": {"maxScale": -1}}}}, 400, "BadRequest",
     ["scaling.maxScale"]),
])
async def test_bad_put_is_400_and_changes_nothing(api: Api, kw: dict[str, Any], status: int,
                                                  code: str, words: list[str]) -> None:
    await api.create()
    before = await api.store.get(objects.function_key("add"))
    got, body = await api.request("put", "/api/v1/functions/add", **kw)
    assert got == status, body
    message = error(body, code)
    for word in words:
        assert word in message, message
    assert await api.store.get(objects.function_key("add")) == before


async def test_put_unknown_function_is_404(api: Api) -> None:
    status, body = await api.request("put", "/api/v1/functions/nope",
                                     json={"spec": {"timeoutSeconds": 5}})
    assert status == 404
    error(body, "NotFound")


async def test_delete_removes_function_and_replicaset(api: Api) -> None:
    await api.create()
    status, body = await api.request("delete", "/api/v1/functions/add")
    assert status == 200 and body["deleted"] == "add"
    assert await api.stored() == []
    status, body = await api.request("delete", "/api/v1/functions/add")
    assert status == 404
    error(body, "NotFound")


async def test_logs_join_saved_and_live_output(api: Api) -> None:
    await api.create()
    api.settings.logs_dir.mkdir(parents=True)
    (api.settings.logs_dir / "add.log").write_text("from a removed pod\n")
    status, body = await api.request("get", "/api/v1/functions/add/logs")
    assert status == 200
    assert body == "from a removed pod\nlive output of add\n"
    status, body = await api.request("get", "/api/v1/functions/nope/logs")
    assert status == 404


async def test_read_views(api: Api) -> None:
    await api.create()
    status, body = await api.request("get", "/api/v1/namespaces/serverless/replicasets")
    assert status == 200 and [r["metadata"]["name"] for r in body["items"]] == ["add"]
    status, rs = await api.request("get", "/api/v1/namespaces/serverless/replicasets/add")
    assert status == 200 and rs["kind"] == "ReplicaSet"
    status, body = await api.request("get", "/api/v1/namespaces/serverless/replicasets/x")
    assert status == 404 and "no ReplicaSet named 'x'" in error(body, "NotFound")
    for name, fn in (("add-a1", "add"), ("other-b2", "other")):
        pod = objects.new_object("Pod", name, {"function": fn}, namespace=objects.NAMESPACE)
        await api.store.create(objects.pod_key(name), pod)
    status, body = await api.request("get", "/api/v1/namespaces/serverless/pods")
    assert sorted(p["metadata"]["name"] for p in body["items"]) == ["add-a1", "other-b2"]
    status, body = await api.request("get", "/api/v1/namespaces/serverless/pods",
                                     params={"function": "add"})
    assert status == 200 and [p["metadata"]["name"] for p in body["items"]] == ["add-a1"]


async def test_trigger_passes_the_body_to_the_activator(api: Api) -> None:
    status, body = await api.request("post", "/function/add", content=b'{"x": 3, "y": 5}')
    assert status == 200 and body == {"result": 8}
    assert api.activator.invoked == [("add", b'{"x": 3, "y": 5}')]
    await api.request("post", "/function/add")
    assert api.activator.invoked[-1] == ("add", b"{}")  # no body: no arguments


async def test_health_metrics_and_unknown_routes(api: Api) -> None:
    status, body = await api.request("get", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    status, body = await api.request("get", "/metrics")
    assert status == 200 and "allinone_builds_total" in body
    status, body = await api.request("get", "/api/v1/nothing")
    assert status == 404 and "no route GET /api/v1/nothing" in error(body, "NotFound")
    status, body = await api.request("patch", "/api/v1/functions/add")
    assert status == 405
    error(body, "MethodNotAllowed")
