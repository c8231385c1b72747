"""The build reconciler over the in-memory store with a fake builder: a new or changed
Function becomes Ready with its pod template in the ReplicaSet, a failed build becomes
Failed with the builder's message, scaling-only changes keep the template, and a deleted
Function loses its image tags and (unshared) source."""

from __future__ import annotations

import asyncio
import copy
import hashlib
from pathlib import Path

import pytest

from allinone import objects
from allinone.builder.builder import BuildError, BuildResult
from allinone.builder.reconciler import BuildReconciler, replicaset_for
from allinone.builder.sources import SourceStore
from allinone.builder.validate import ValidatedSource
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore

ADD = b"def run(x, y):\n    return x + y\n"


class FakeBuilder:
    def __init__(self) -> None:
        self.built: list[tuple[str, str, bytes]] = []
        self.deleted: list[str] = []
        self.fail_with: str | None = None

    async def build(self, name: str, source: ValidatedSource, handler: str) -> BuildResult:
        if self.fail_with:
            raise BuildError(self.fail_with)
        # Content-addressed like the real one: the same source and handler, the same image.
        digest = "sha256:" + hashlib.sha256(source.sha256.encode() + handler.encode()).hexdigest()
        cached = any(b[2] == source.files["func.py"] and b[1] == handler for b in self.built)
        self.built.append((name, handler, source.files["func.py"]))
        return BuildResult(image=f"127.0.0.1:5000/allinone/{name}@{digest}", digest=digest,
                           cached=cached, seconds=0.25)

    async def delete_image(self, name: str) -> bool:
        self.deleted.append(name)
        return True

    async def prune(self, name: str, keep: frozenset[str]) -> bool:
        return True


class World:
    def __init__(self, tmp: Path) -> None:
        self.store = MemoryStore()
        self.sources = SourceStore(tmp / "sources")
        self.builder = FakeBuilder()
        self.metrics = Metrics()
        self.functions = Informer(self.store, objects.FUNCTIONS_PREFIX)
        self.reconciler = BuildReconciler(
            self.store, self.functions, self.builder,  # type: ignore[arg-type]
            self.sources, self.metrics, max_upload=1 << 20, max_unzipped=1 << 20)

    async def create(self, name: str = "add", source: bytes = ADD, **spec: object) -> None:
        sha = self.sources.put(source)
        full = objects.normalize_spec(spec or None)
        full["source"] = {"filename": f"{name}.py", "sha256": sha, "size": len(source)}
        fn = objects.new_object("Function", name, full)
        fn["status"] = {"phase": objects.BUILDING, "observedGeneration": 0}
        created = await self.store.create(objects.function_key(name), fn)
        await self.store.create(objects.replicaset_key(name), replicaset_for(created))

    async def change(self, name: str, **spec: object) -> None:
        fn = await self.store.get(objects.function_key(name))
        new = copy.deepcopy(fn)
        new["spec"].update(spec)
        new["metadata"]["generation"] += 1
        new["status"]["phase"] = objects.BUILDING
        await self.store.update(objects.function_key(name), new)

    async def fn(self, name: str = "add") -> objects.Obj:
        return await self.store.get(objects.function_key(name))

    async def rs(self, name: str = "add") -> objects.Obj:
        return await self.store.get(objects.replicaset_key(name))

    def count(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value("allinone_builds_total",
                                                       {"result": result})
        return value or 0.0


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_new_function_becomes_ready_with_template(world: World) -> None:
    await world.create(env={"GREETING": "hi"})
    await world.reconciler.sync("add")
    fn = await world.fn()
    assert fn["status"]["phase"] == objects.READY
    assert fn["status"]["observedGeneration"] == 1
    assert fn["status"]["image"].startswith("127.0.0.1:5000/allinone/add@sha256:")
    assert fn["status"]["message"] == ""
    rs = await world.rs()
    assert rs["spec"]["template"]["image"] == fn["status"]["image"]
    assert rs["spec"]["template"]["env"] == {"GREETING": "hi"}
    assert rs["spec"]["template"]["handler"] == "run"
    assert rs["spec"]["templateHash"]
    assert world.builder.built == [("add", "run", ADD)]
    assert world.count("built") == 1


async def test_sync_of_an_observed_generation_builds_nothing(world: World) -> None:
    await world.create()
    await world.reconciler.sync("add")
    await world.reconciler.sync("add")  # idempotent: generation already observed
    assert len(world.builder.built) == 1


async def test_failed_build_is_failed_with_the_builders_message(world: World) -> None:
    await world.create()
    world.builder.fail_with = "pip could not install no-such-package==1.0"
    await world.reconciler.sync("add")
    fn = await world.fn()
    assert fn["status"]["phase"] == objects.FAILED
    assert fn["status"]["message"] == "pip could not install no-such-package==1.0"
    assert fn["status"]["observedGeneration"] == 1
    assert (await world.rs())["spec"]["template"] is None  # no pods for a failed build
    assert world.count("failed") == 1


async def test_corrupt_stored_source_fails_the_build(world: World) -> None:
    await world.create()
    fn = await world.fn()
    world.sources.path(fn["spec"]["source"]["sha256"]).write_bytes(b"def run(:\n")
    await world.reconciler.sync("add")
    fn = await world.fn()
    assert fn["status"]["phase"] == objects.FAILED
    assert "line 1" in fn["status"]["message"]
    assert world.builder.built == []


async def test_scaling_change_keeps_the_template_hash(world: World) -> None:
    await world.create()
    await world.reconciler.sync("add")
    before = await world.rs()
    await world.change("add", scaling={**(await world.fn())["spec"]["scaling"],
                                       "maxScale": 3})
    await world.reconciler.sync("add")
    after = await world.rs()
    assert (await world.fn())["status"]["observedGeneration"] == 2
    assert after["spec"]["templateHash"] == before["spec"]["templateHash"]


async def test_env_change_rolls_a_new_template(world: World) -> None:
    await world.create()
    await world.reconciler.sync("add")
    before = await world.rs()
    await world.change("add", env={"MODE": "fast"})
    await world.reconciler.sync("add")
    after = await world.rs()
    assert after["spec"]["templateHash"] != before["spec"]["templateHash"]
    assert after["spec"]["template"]["generation"] == 2
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1


async def test_missing_replicaset_is_created_with_the_template(world: World) -> None:
    await world.create()
    await world.store.delete(objects.replicaset_key("add"))
    await world.reconciler.sync("add")
    assert (await world.rs())["spec"]["template"] is not None


async def test_deleted_function_loses_image_and_unshared_source(world: World) -> None:
    await world.create("add")
    await world.create("same", source=ADD)  # shares the archive
    await world.create("solo", source=b"def run():\n    return 1\n")
    task = asyncio.get_running_loop().create_task(world.functions.run())
    await world.functions.synced.wait()
    shas = {n: (await world.fn(n))["spec"]["source"]["sha256"] for n in ("add", "solo")}
    for name in ("add", "solo"):
        await world.store.delete(objects.function_key(name))
    for _ in range(100):  # let the informer deliver both deletions (no clock involved)
        if len(world.functions.items()) == 1:
            break
        await asyncio.sleep(0)
    await world.reconciler.sync("add")
    await world.reconciler.sync("solo")
    task.cancel()
    assert world.builder.deleted == ["add", "solo"]
    assert world.sources.has(shas["add"])  # "same" still uses it
    assert not world.sources.has(shas["solo"])
