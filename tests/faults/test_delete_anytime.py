"""DELETE at any moment of a function's life leaves nothing behind (issue 8, "Done when").

50 lifecycles, several at once, each deleted at a random moment of one of four phases:

- ``build``: while the image is built or pushed (or just before the build starts);
- ``start``: once the build is done, while its pods' containers are being started;
- ``load``: while a burst of short requests is being served;
- ``drain``: while long requests are in flight, so its pods are draining as they go.

Then, for every one of them: no container labelled with its name (running or not), no
object in etcd that names it (Function, ReplicaSet, Pods, anything else), no tag in the
registry, no reference to its repository among the local Docker images, and nothing in
the state directory (saved logs, the source archive, pod socket directories). The random
choices come from one seed, printed (and taken from ``ALLINONE_FAULT_SEED`` to replay a
run); what a failure leaves is listed per function.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import json
import os
import random
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from allinone.store.etcd import EtcdStore
from allinone.testing import ServerProcess, make_zip, wait_for
from tests.faults.conftest import Stopwatch, record, registry_tags
from tests.faults.test_objects import local_refs

pytestmark = pytest.mark.faults

LIFECYCLES = 50
AT_ONCE = 5
MOMENTS = ("build", "start", "load", "drain")

# Small and fast to build; each function's source differs (its name is in it), so every
# deploy makes a real build and push, not a cache hit.
SOURCE = '''import time


def run(ms=0, **kw):
    time.sleep(ms / 1000)
    return {{"who": "{name}", "slept_ms": ms}}
'''


def etcd_objects(server: ServerProcess) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = await EtcdStore.connect(f"http://127.0.0.1:{server.etcd_port}")
        try:
            items, _ = await store.list("/")
            return items
        finally:
            await store.close()
    return asyncio.run(read())


def naming(objs: list[dict[str, Any]], name: str) -> list[str]:
    """The objects that name function ``name`` anywhere (its own name, a pod's name
    ``NAME-...``, ``spec.function``, labels, images), as ``Kind/name``."""
    out = []
    for o in objs:
        text = json.dumps(o)
        if f'"{name}"' in text or f'"{name}-' in text or f"/{name}@" in text \
                or f"/{name}:" in text:
            out.append(f"{o.get('kind', '?')}/{o['metadata'].get('name')}")
    return out


def leftovers(server: ServerProcess, names: list[str], sources: dict[str, str]
              ) -> dict[str, list[str]]:
    """What is left of each function of ``names`` (only those with something left);
    ``sources`` maps each name to its source's sha256 (every source is unique)."""
    objs = etcd_objects(server)
    state = server.state_dir
    left: dict[str, list[str]] = {}
    for name in names:
        found = [f"etcd {o}" for o in naming(objs, name)]
        found += [f"file {p.relative_to(state)}" for p in
                  [*(state / "logs").glob(f"{name}.log*"), *(state / "pods").glob(f"{name}-*"),
                   *(state / "sources").glob(f"*/{sources[name]}")]]
        found += [f"container {c.name} ({c.status})" for c in server.containers(name, all=True)]
        tags = registry_tags(server, f"allinone/{name}")
        if tags is None:
            found.append("registry not answering")
        else:
            found += [f"registry tag {t}" for t in tags]
        found += [f"local image {ref}" for ref in local_refs(server, name)]
        if found:
            left[name] = found
    return left


class Lifecycle:
    """One function's life, cut short by a DELETE at a random moment of ``moment``."""

    def __init__(self, server: ServerProcess, src_dir: Path, index: int, moment: str,
                 rng: random.Random) -> None:
        self.server = server
        self.name = f"life{index}-{moment}"
        self.moment = moment
        # Drawn up front, in order, so the seed alone replays every choice.
        # A build takes seconds (queued, built, pushed); the other moments are short.
        self.delay = rng.uniform(0.0, 6.0 if moment == "build" else 0.6)
        source = SOURCE.format(name=self.name)
        if moment == "build":
            # 8 MiB of data make the build (its COPY, then the push) last seconds, so
            # the random moment falls inside it, not only before or after.
            self.path = src_dir / f"{self.name}.zip"
            self.path.write_bytes(make_zip({"func.py": source.encode(),
                                            "data.bin": rng.randbytes(8 * 1024 * 1024)},
                                           method=zipfile.ZIP_STORED))
        else:
            self.path = src_dir / f"{self.name}.py"
            self.path.write_text(source)
        self.answers: list[int | str] = []
        self.deleted_after = 0.0

    def _call(self, ms: int) -> None:
        try:
            r = requests.post(self.server.url + f"/function/{self.name}", json={"ms": ms},
                              timeout=60)
            out: int | str = r.status_code
        except requests.RequestException as exc:
            out = type(exc).__name__
        self.answers.append(out)

    def _ready(self) -> bool:
        return bool(self.server.get(self.name)["status"].get("readyReplicas"))

    def run(self) -> None:
        srv, name = self.server, self.name
        spec = {"scaling": {"minScale": 1 if self.moment in ("start", "drain") else 0,
                            "maxScale": 3}, "timeoutSeconds": 30}
        clock = Stopwatch()
        resp = srv.deploy(name, self.path, spec=spec, wait=False)
        assert resp.status_code == 201, resp.text
        calls: list[threading.Thread] = []
        if self.moment == "build":
            time.sleep(self.delay)
        elif self.moment == "start":
            wait_for(lambda: srv.containers(name, all=True), 300, f"{name}'s first container")
            time.sleep(self.delay)
        else:
            srv.wait_phase(name, "Ready")
            if self.moment == "drain":
                wait_for(self._ready, 60, f"{name}'s ready pod")
            else:  # warm: the burst is served by a running pod, not a cold start
                assert srv.invoke(name, {}, timeout=60).status_code == 200
            n, ms = (12, 100) if self.moment == "load" else (4, 2500)
            calls = [threading.Thread(target=self._call, args=(ms,)) for _ in range(n)]
            for t in calls:
                t.start()
            time.sleep(self.delay + (1.0 if self.moment == "drain" else 0.0))
        self.deleted_after = clock()
        resp = srv.delete(name)
        assert resp.status_code in (200, 404), resp.text
        for t in calls:
            t.join(90)


def test_delete_at_any_moment_leaves_nothing(server: ServerProcess, tmp_path: Path) -> None:
    seed = int(os.environ.get("ALLINONE_FAULT_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\ntest_delete_at_any_moment_leaves_nothing: seed {seed} "
          f"(replay with ALLINONE_FAULT_SEED={seed})")
    rng = random.Random(seed)
    lives = [Lifecycle(server, tmp_path, i, rng.choice(MOMENTS), rng)
             for i in range(LIFECYCLES)]
    clock = Stopwatch()
    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        for future in [pool.submit(life.run) for life in lives]:
            future.result()
    deleted = clock()
    names = [life.name for life in lives]
    sources = {life.name: hashlib.sha256(life.path.read_bytes()).hexdigest() for life in lives}
    try:
        wait_for(lambda: not leftovers(server, names, sources), 120,
                 "nothing of the deleted functions to remain")
    except AssertionError:
        left = leftovers(server, names, sources)
        raise AssertionError(f"seed {seed}: {len(left)} of {LIFECYCLES} functions left "
                             f"something behind:\n" + json.dumps(left, indent=1)) from None
    cleaned = clock()
    by_moment = {m: sum(1 for life in lives if life.moment == m) for m in MOMENTS}
    def answers(moment: str) -> dict[str, int]:
        return dict(collections.Counter(str(a) for life in lives if life.moment == moment
                                        for a in life.answers))
    log = server.log_path.read_text(errors="replace")
    # Which of the reconciler's delete paths the random moments reached.
    paths = {"deleted_while_building": log.count("was deleted while it built"),
             "waited_for_pods_of_deleted": log.count("waiting for the pods of deleted"),
             "warnings": log.count(" WARNING "), "errors": log.count(" ERROR "),
             "tracebacks": log.count("Traceback")}
    record("DELETE at a random moment, 50 lifecycles", seed=seed, by_moment=by_moment,
           seconds_all_deleted=deleted, seconds_until_nothing_left=cleaned,
           containers_left=0, objects_left=0, image_tags_left=0, state_files_left=0,
           answers_during_drain=answers("drain"), answers_during_load=answers("load"),
           server_log=paths)
