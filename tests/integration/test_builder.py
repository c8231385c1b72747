"""Builder against a real Docker engine and a real registry (started here, on a free port).

Every image tag and container made here has a unique name and is removed in a
finalizer; the registry's storage lives in a temporary directory that is deleted with
it. The first build pushes the base image's layer into the fresh registry (several
seconds); later ones push only the function's layer.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from allinone.builder.builder import Builder, BuildError, BuildResult
from allinone.builder.validate import ValidatedSource, validate_source
from allinone.config import DEFAULT_BASE_IMAGE
from allinone.services.registry import RegistryProcess
from allinone.testing import free_port

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MIB = 1024 * 1024
TEST_LABEL = "allinone.test"



def source(filename: str, handler: str = "run", data: bytes | None = None) -> ValidatedSource:
    if data is None:
        data = (FIXTURES / filename).read_bytes()
    return validate_source(filename, data, handler, max_upload=50 * MIB,
                           max_unzipped=200 * MIB)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        client.api.inspect_image(DEFAULT_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"base image {DEFAULT_BASE_IMAGE} is missing: run `allinone setup`")
    yield client
    client.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    state = tmp_path_factory.mktemp("registry")
    reg = RegistryProcess(state, free_port())
    asyncio.run(reg.start())
    yield reg
    asyncio.run(reg.stop())
    # The base layer alone is ~250 MB; do not leave it to pytest's tmp retention.
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module scope: the pip cache is shared by the tests, as in a server.
    return tmp_path_factory.mktemp("builder-work")


@pytest.fixture
def builder(docker_client: Any, registry: RegistryProcess, work_dir: Path) -> Builder:
    return Builder(DEFAULT_BASE_IMAGE, registry.address, work_dir, docker_client)


@pytest.fixture
def unique_name(builder: Builder) -> Iterator[Callable[[str], str]]:
    """Function names unique to this run; their images are deleted afterwards."""
    names: list[str] = []

    def make(prefix: str) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        asyncio.run(builder.delete_image(name))


@pytest.fixture
def run_image(docker_client: Any) -> Iterator[Callable[[str], int]]:
    """Start an image as a pod would be (host network, ALLINONE_PORT); returns the port."""
    containers: list[Any] = []

    def start(image: str) -> int:
        port = free_port()
        container = docker_client.containers.run(
            image, detach=True, network_mode="host",
            environment={"ALLINONE_PORT": str(port)}, labels={TEST_LABEL: "builder"},
        )
        containers.append(container)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _ = http_call(port, "GET", "/healthz")
                if status == 200:
                    return port
            except OSError:
                pass
            container.reload()
            if container.status == "exited":
                raise AssertionError(f"container exited: {container.logs().decode()}")
            time.sleep(0.02)
        raise AssertionError(f"container did not become healthy: {container.logs().decode()}")

    yield start
    for container in containers:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def http_call(port: int, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = None if payload is None else json.dumps(payload)
        conn.request(method, path, body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


async def registry_get(registry: RegistryProcess, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://{registry.address}{path}") as resp:
        body = await resp.json(content_type=None)
        return resp.status, body


def check_pushed(registry: RegistryProcess, name: str, result: BuildResult) -> None:
    assert result.image.startswith(f"{registry.address}/allinone/{name}@sha256:")
    assert result.image.endswith(result.digest)
    tag = result.tag.rpartition(":")[2]
    status, body = asyncio.run(registry_get(registry, f"/v2/allinone/{name}/tags/list"))
    assert status == 200 and tag in body["tags"]


async def test_build_push_and_run_add(builder: Builder, registry: RegistryProcess,
                                      unique_name: Callable[[str], str],
                                      run_image: Callable[[str], int]) -> None:
    name = unique_name("add")
    result = await builder.build(name, source("add.py"), "run")
    await asyncio.to_thread(check_pushed, registry, name, result)
    port = await asyncio.to_thread(run_image, result.image)
    assert await asyncio.to_thread(http_call, port, "POST", "/", {"x": 3, "y": 5}) == (200, 8)

    again = await builder.build(name, source("add.py"), "run")
    assert again.cached is True
    assert again.digest == result.digest and again.image == result.image

    # Same source under another name: no docker build, its own repository.
    other = unique_name("add-copy")
    copy = await builder.build(other, source("add.py"), "run")
    assert copy.cached is True and copy.digest == result.digest
    await asyncio.to_thread(check_pushed, registry, other, copy)


async def test_handler_change_is_a_new_build(builder: Builder,
                                             unique_name: Callable[[str], str]) -> None:
    data = b"def run(): return 'a'\n\ndef other(): return 'b'\n"
    name = unique_name("handlers")
    first = await builder.build(name, source("h.py", data=data), "run")
    second = await builder.build(name, source("h.py", "other", data=data), "other")
    assert first.tag != second.tag and not second.cached


async def test_withdeps_zip_dependency_imports(builder: Builder, registry: RegistryProcess,
                                               unique_name: Callable[[str], str],
                                               run_image: Callable[[str], int]) -> None:
    name = unique_name("withdeps")
    result = await builder.build(name, source("withdeps.zip"), "run")
    port = await asyncio.to_thread(run_image, result.image)
    status, body = await asyncio.to_thread(http_call, port, "POST", "/", {"n": 1234567})
    assert status == 200
    assert body == {"size": "1.2 MB", "humanize": "4.17.0"}


async def test_realistic_package_handler(builder: Builder, unique_name: Callable[[str], str],
                                         run_image: Callable[[str], int]) -> None:
    name = unique_name("realistic")
    result = await builder.build(name, source("realistic.zip", "app.main.handle"),
                                 "app.main.handle")
    port = await asyncio.to_thread(run_image, result.image)
    status, body = await asyncio.to_thread(
        http_call, port, "POST", "/", {"text": "Dogs bark. Dogs run.", "top": 1})
    assert status == 200
    assert body["words"] == 4 and body["top_words"] == [{"word": "dogs", "count": 2}]


async def test_failing_requirement_names_it(builder: Builder,
                                            unique_name: Callable[[str], str]) -> None:
    missing = f"allinone-no-such-package-{uuid.uuid4().hex[:6]}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("func.py", "def run(): return 1\n")
        zf.writestr("requirements.txt", f"six\n{missing}==1.0\n")
    name = unique_name("baddeps")
    with pytest.raises(BuildError) as info:
        await builder.build(name, source("f.zip", data=buf.getvalue()), "run")
    message = str(info.value)
    assert missing in message
    assert "requirements.txt line 2" in message


async def test_push_to_registry_that_is_down(docker_client: Any, work_dir: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    builder = Builder(DEFAULT_BASE_IMAGE, dead, work_dir, docker_client)
    data = b"def run(): return 'never pushed'\n"
    name = f"t-down-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(BuildError, match=rf"push to registry {dead} failed"):
            await builder.build(name, source("down.py", data=data), "run")
    finally:
        for image in docker_client.api.images(name=f"{dead}/allinone/{name}"):
            for ref in image.get("RepoTags") or []:
                docker_client.api.remove_image(ref)


async def test_docker_build_error_is_reported(docker_client: Any, registry: RegistryProcess,
                                              tmp_path: Path) -> None:
    # A template whose RUN step fails: the engine reports it inside the event stream.
    imagedata = tmp_path / "imagedata"
    imagedata.mkdir()
    (imagedata / "shim.py").write_bytes((FIXTURES.parent / "imagedata" / "shim.py").read_bytes())
    (imagedata / "Dockerfile").write_text("FROM {base_image}\nRUN exit 3\n")
    builder = Builder(DEFAULT_BASE_IMAGE, registry.address, tmp_path / "work", docker_client,
                      imagedata_dir=imagedata)
    with pytest.raises(BuildError, match=r"docker build failed: .*returned a non-zero code: 3"):
        await builder.build(f"t-fail-{uuid.uuid4().hex[:8]}", source("add.py"), "run")


async def test_delete_image_removes_registry_and_local_tags(
        builder: Builder, registry: RegistryProcess, docker_client: Any,
        unique_name: Callable[[str], str]) -> None:
    name = unique_name("delete")
    data = f"def run(): return {uuid.uuid4().hex!r}\n".encode()
    await builder.build(name, source("d.py", data=data), "run")
    await builder.delete_image(name)
    status, body = await registry_get(registry, f"/v2/allinone/{name}/tags/list")
    assert status == 404 or not body.get("tags")
    assert docker_client.api.images(name=builder.repository(name)) == []
    # Deleting again, or a name never built, is not an error.
    await builder.delete_image(name)
    await builder.delete_image(unique_name("never"))
