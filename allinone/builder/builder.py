"""Build a function image with the Docker engine and push it to the registry.

A build context is assembled in memory (a tar, no temporary directory):

    Dockerfile      imagedata/Dockerfile with {base_image} and {handler} filled in
    shim/shim.py    imagedata/shim.py, the runtime shim
    deps/           requirements.txt installed on the HOST with ``pip --target``
                    (containers cannot reach the package index), or empty:
                    wheels only, so no package code runs on the host
    function/       the validated files: a .py upload as func.py, or the zip's contents

and built with the engine's classic builder through the low-level API, then tagged
``REGISTRY/allinone/NAME:BUILDHASH`` and pushed. The result names the image by digest
(``REGISTRY/allinone/NAME@sha256:...``) so a pod always runs exactly what was built,
even if the tag is later overwritten.

Invariants and why:

- BUILDHASH is a sha256 over everything that decides the image's content: the source
  archive's hash (which covers requirements.txt), the handler, the Dockerfile template,
  the shim and the base image's id. Equal hashes mean images made from the same
  inputs, so a local image tagged ``ANY-REGISTRY/allinone/ANY-NAME:BUILDHASH`` is
  reused without running ``docker build``
  (it is still tagged and pushed under this function's name: a push of layers the
  registry already has takes a few tens of ms). The tag is the cache index, not a
  label: in the classic builder a label that differs per build is one more step that
  creates and commits a container, measured at +150-200 ms on a 0.2-0.25 s build. It
  also ties the cache's lifetime to the functions: when the last tag of an image is
  removed (its functions deleted), the image goes with it.
- Installed dependencies are cached under ``work_dir/deps/KEY`` where KEY hashes the
  requirements.txt bytes and the interpreter's cache tag (cpython-311): pip runs once
  per distinct requirements file. A cache directory only appears complete: pip writes
  into a temporary directory that is renamed into place on success.
- Every event of ``build`` and ``push`` is checked for ``error``: the engine reports
  failures inside the stream with HTTP 200, and ``push`` never raises for them. A
  failure is a :class:`BuildError` whose message a user can act on.
- pip installs wheels only (``--only-binary=:all:``): an sdist's setup.py or build
  backend would run on the host, as the server's user. It reads the requirements as
  ``packaging`` parsed them (never the uploaded bytes), runs in a scratch directory
  with a minimal environment (:func:`pip_environment`: no server secrets), in its own
  process group that is killed at ``pip_timeout``. A project with no fitting wheel
  fails the build with a message naming it (:func:`pip_failure_message`).
- The docker SDK is synchronous; each of its calls runs in a worker thread so the
  event loop (and with it the activator) never stalls on a build.
- pip runs with this process's interpreter, so the base image must have the same
  Python minor version (3.11 in both ``allinone/python-base`` and ``python:3.11-slim``):
  compiled wheels and .pyc files are chosen for the host's CPython.

Measured on the 2-core development machine (engine 20.10, classic builder): build and
push of a new 1 KB function p50 0.28 s (build ~0.2 s, push of one new layer ~0.08 s);
the same source again 0.035 s (no build, the push finds every layer present); the same
source under another function name 0.10 s. The very first push into an empty registry
uploads the ~250 MB base layer once, about 9 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from allinone.builder.validate import ValidatedSource, parse_requirements, requirement_lines
from allinone.objects import ValidationError, validate_name

log = logging.getLogger(__name__)

# The repository root's imagedata/ (the package is installed editable).
IMAGEDATA_DIR = Path(__file__).resolve().parents[2] / "imagedata"
REPO_PREFIX = "allinone"
# 20 hex digits = 80 bits: a collision needs ~2^40 builds, far beyond one engine's life.
BUILD_HASH_LEN = 20
# Bump when the context layout changes in a way the template text does not show.
CONTEXT_VERSION = "1"
# Registry manifest types we may meet when deleting; the digest of a tag is the digest
# of its manifest in whatever type it was pushed (Docker 20.10 pushes schema 2).
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
# Function files get fixed metadata so equal sources give byte-identical contexts.
_FILE_MODE, _DIR_MODE, _MTIME = 0o644, 0o755, 1_700_000_000


class BuildError(Exception):
    """The build or push failed; the message says why, in words a user can act on.

    ``infrastructure`` is True when the cause is ours, not the function's: the Docker
    engine or the registry did not answer. Such builds are retried by themselves.
    """

    def __init__(self, message: str, *, infrastructure: bool = False) -> None:
        super().__init__(message)
        self.infrastructure = infrastructure


# Words of engine and registry messages that mean "could not talk to it", not "your
# function is wrong".
_INFRA_MARKERS = ("connection refused", "connection reset", "dial tcp", "no such host",
                  "i/o timeout", "timeout", "eof", "502 bad gateway", "503 service",
                  "500 internal server error", "cannot reach", "unavailable",
                  # The engine lost an image a build step uses (the base, the build
                  # cache): nothing in the function's code; a retry rebuilds it.
                  "unable to find image", "no such image")


def _is_infrastructure(message: str) -> bool:
    text = message.lower()
    return any(marker in text for marker in _INFRA_MARKERS)


@dataclass(frozen=True)
class BuildResult:
    image: str  # REGISTRY/allinone/NAME@sha256:..., what pods run
    digest: str  # sha256:... of the pushed manifest
    cached: bool  # True when an image of this build hash existed: no docker build
    seconds: float  # wall time of build (or cache lookup) plus push
    tag: str = ""  # REGISTRY/allinone/NAME:BUILDHASH


DockerClientArg = Any  # a docker.DockerClient, a factory returning one, or None


class Builder:
    def __init__(
        self,
        base_image: str,
        registry: str,
        work_dir: Path,
        client: DockerClientArg = None,
        *,
        imagedata_dir: Path = IMAGEDATA_DIR,
        pip_python: str = sys.executable,
        pip_timeout: float = 600.0,
        registry_timeout: float = 30.0,
    ) -> None:
        self.base_image = base_image
        self.registry = registry
        self.work_dir = Path(work_dir)
        self.pip_python = pip_python
        self.pip_timeout = pip_timeout
        self.registry_timeout = registry_timeout
        if client is None:
            self._factory: Callable[[], Any] = lambda: docker.from_env(timeout=600)
            self._client: Any = None
        elif hasattr(client, "api"):
            self._factory, self._client = (lambda: client), client
        else:
            self._factory, self._client = client, None
        self._dockerfile = (imagedata_dir / "Dockerfile").read_text()
        self._shim = (imagedata_dir / "shim.py").read_bytes()
        # Template and shim are read once: the hash of what every image is made from.
        self._template_hash = hashlib.sha256(
            CONTEXT_VERSION.encode() + b"\0" + self._dockerfile.encode() + b"\0" + self._shim
        ).hexdigest()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Held while warm() pushes the base layers: a build pushing at the same time
        # would upload the same ~250 MB again, so its push waits for this instead.
        self._base_push = asyncio.Lock()
        # Builds in progress, when the last one ended, and a gate that the registry's
        # garbage collection closes (see exclusive()).
        self._active = 0
        self._last_active = time.monotonic()
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()  # set while no build runs
        self._idle.set()
        self._exclusive = 0  # holders of exclusive(); the gate opens when the last leaves
        # Set when manifests were deleted: the registry has blobs to collect.
        self.garbage_pending = False

    # -- public API ---------------------------------------------------------

    def idle_for(self) -> float:
        """Seconds since the last build ended (0 while one runs)."""
        return 0.0 if self._active else time.monotonic() - self._last_active

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No build runs inside (new ones wait): for the registry's offline GC and for
        removing local images. Several holders may be inside at once (they do not
        conflict with each other); builds resume when the last one leaves."""
        self._exclusive += 1
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._exclusive -= 1
            if not self._exclusive:
                self._open.set()

    async def build(self, name: str, source: ValidatedSource, handler: str) -> BuildResult:
        """Build (or reuse) and push the image of function ``name``."""
        validate_name(name)
        await self._open.wait()
        self._begin()
        try:
            return await self._build(name, source, handler)
        finally:
            self._end()

    def _begin(self) -> None:
        self._active += 1
        self._idle.clear()

    def _end(self) -> None:
        self._active -= 1
        self._last_active = time.monotonic()
        if not self._active:
            self._idle.set()

    async def _build(self, name: str, source: ValidatedSource, handler: str) -> BuildResult:
        started = time.monotonic()
        client = await self._docker()
        base_id = await asyncio.to_thread(self._base_image_id, client)
        build_hash = self.build_hash(source.sha256, handler, base_id)
        repo = self.repository(name)
        ref = f"{repo}:{build_hash}"
        async with self._lock(f"build:{build_hash}"):
            cached = await asyncio.to_thread(self._tag_cached, client, build_hash, repo)
            if not cached:
                deps = await self._deps(source.requirements) if source.requirements else None
                context = await asyncio.to_thread(self._context, source, handler, deps)
                t_build = time.monotonic()
                try:
                    await asyncio.to_thread(self._docker_build, client, context, ref)
                finally:
                    context.close()
                log.debug("docker build of %s took %.3f s", ref, time.monotonic() - t_build)
        async with self._base_push:
            pass  # wait for a warm() push in progress: the layers it uploads are ours too
        t_push = time.monotonic()
        digest = await asyncio.to_thread(self._push, client, repo, build_hash)
        seconds = time.monotonic() - started
        log.debug("push of %s took %.3f s", ref, time.monotonic() - t_push)
        return BuildResult(image=f"{repo}@{digest}", digest=digest, cached=cached,
                           seconds=seconds, tag=ref)

    async def warm(self) -> None:
        """Push the base image's layers to the registry once, ahead of the first deploy.

        The base layer is ~250 MB; pushing it with the first function took ~9 s here,
        against ~0.3 s for a build and push once the registry holds it (the engine
        mounts the blob from this repository instead of uploading it again). It goes
        to ``allinone-base/python`` so it cannot collide with a function's repository
        (function names may not contain '/').
        """
        client = await self._docker()
        repo = f"{self.registry}/{REPO_PREFIX}-base/python"
        started = time.monotonic()
        async with self._base_push:
            await asyncio.to_thread(client.api.tag, self.base_image, repo, "latest")
            await asyncio.to_thread(self._push, client, repo, "latest")
        log.info("base image %s pushed to %s in %.1f s", self.base_image, repo,
                 time.monotonic() - started)

    async def delete_image(self, name: str) -> bool:
        """Remove every tag of ``allinone/NAME`` from the registry and the local engine."""
        return await self.prune(name, keep=frozenset())

    async def prune(self, name: str, keep: frozenset[str]) -> bool:
        """Remove the images of ``allinone/NAME`` whose digest is not in ``keep``.

        Registry manifests go by digest (with every tag on them); local references
        (tags and digests) of this registry's repository go, the engine deleting the
        image and its layers with its last reference (the build cache's tags under
        other registries keep theirs). A local image a container still uses is left
        for a later pass. Returns True when nothing outside ``keep`` is left.
        Already-absent tags are not errors; an unreachable registry is a BuildError.
        """
        validate_name(name)
        client = await self._docker()
        # Not while a build runs: removing an image makes the engine delete its untagged
        # parents, and those are the build cache (base and deps steps) that a build of
        # another function is using at that moment; its next step then fails with
        # "unable to find image" (found by tests/faults/test_delete_anytime.py).
        async with self.exclusive():
            done = await asyncio.to_thread(self._remove_local, client, name, keep)
        base = f"http://{self.registry}/v2/{REPO_PREFIX}/{name}"
        timeout = aiohttp.ClientTimeout(total=self.registry_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(f"{base}/tags/list") as resp:
                    if resp.status == 404:
                        return done  # the registry never saw this repository
                    if resp.status != 200:
                        raise BuildError(f"registry {self.registry} answered {resp.status} "
                                         f"listing the tags of {REPO_PREFIX}/{name}: "
                                         f"{(await resp.text())[:200]}",
                                         infrastructure=resp.status >= 500)
                    tags = (await resp.json()).get("tags") or []
                digests: set[str] = set()
                for tag in tags:
                    async with session.head(f"{base}/manifests/{tag}",
                                            headers={"Accept": MANIFEST_TYPES}) as resp:
                        digest = resp.headers.get("Docker-Content-Digest")
                        if resp.status == 200 and digest:
                            digests.add(digest)
                for digest in sorted(digests - keep):
                    async with session.delete(f"{base}/manifests/{digest}") as resp:
                        # 202 Accepted is success; 404 means someone deleted it first.
                        if resp.status not in (200, 202, 404):
                            raise BuildError(
                                f"registry {self.registry} refused to delete "
                                f"{REPO_PREFIX}/{name}@{digest} ({resp.status}): "
                                f"{(await resp.text())[:200]} (is delete enabled in its "
                                "config?)")
                    self.garbage_pending = True
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BuildError(f"cannot remove the image of {name} from registry "
                             f"{self.registry}: {exc or type(exc).__name__}",
                             infrastructure=True) from exc
        return done

    def repository(self, name: str) -> str:
        return f"{self.registry}/{REPO_PREFIX}/{name}"

    def build_hash(self, source_sha256: str, handler: str, base_image_id: str) -> str:
        raw = json.dumps([source_sha256, handler, self._template_hash, base_image_id])
        return hashlib.sha256(raw.encode()).hexdigest()[:BUILD_HASH_LEN]

    # -- helpers ------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        # Two builds of the same hash (or pip runs of the same requirements) would do the
        # same work twice and race on the same cache entries; the second waits instead.
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _docker(self) -> Any:
        if self._client is None:
            try:
                self._client = await asyncio.to_thread(self._factory)
            except DockerException as exc:
                raise BuildError(f"cannot reach the Docker engine: {exc}: is it running? "
                                 "(`allinone setup` starts it)", infrastructure=True) from exc
        return self._client

    def _base_image_id(self, client: Any) -> str:
        try:
            return str(client.api.inspect_image(self.base_image)["Id"])
        except ImageNotFound:
            raise BuildError(
                f"the base image {self.base_image} is not on this Docker engine: run "
                "`allinone setup` (or set ALLINONE_BASE_IMAGE to an image you have)"
            ) from None
        except (APIError, requests.RequestException) as exc:
            raise BuildError(f"the Docker engine failed to inspect {self.base_image}: "
                             f"{_api_message(exc)}", infrastructure=_unreachable(exc)) from exc

    def _tag_cached(self, client: Any, build_hash: str, repo: str) -> bool:
        """Tag an existing image of this build hash as REPO:BUILDHASH; False if none."""
        # "*" matches one path segment: any registry, any function, same build hash (a
        # test server with its own registry reuses images a developer's server built).
        pattern = f"*/{REPO_PREFIX}/*:{build_hash}"
        try:
            ids = client.api.images(filters={"reference": pattern}, quiet=True)
            for image_id in ids:
                try:
                    client.api.tag(image_id, repo, build_hash, force=True)
                    return True
                except (ImageNotFound, NotFound):
                    continue  # removed since we listed it; try the next or build anew
        except (APIError, requests.RequestException) as exc:
            raise BuildError(f"the Docker engine failed to list images: "
                             f"{_api_message(exc)}", infrastructure=_unreachable(exc)) from exc
        return False

    def _render_dockerfile(self, handler: str) -> str:
        # ``handler`` was validated as dotted Python identifiers: safe in a Dockerfile.
        return self._dockerfile.replace("{base_image}", self.base_image).replace(
            "{handler}", handler)

    def _context(self, source: ValidatedSource, handler: str, deps: Path | None) -> IO[bytes]:
        """The build context as a tar, spooled to disk past 16 MiB (the function's data
        files stream in from the zip, so a large one never sits in memory whole)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        buf: IO[bytes] = tempfile.SpooledTemporaryFile(
            max_size=16 * 1024 * 1024, dir=str(self.work_dir))
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "Dockerfile", self._render_dockerfile(handler).encode())
            _add_dir(tar, "shim")
            _add_bytes(tar, "shim/shim.py", self._shim)
            _add_dir(tar, "deps")
            if deps is not None:
                for path in sorted(deps.rglob("*")):
                    # Real modes and mtimes: pip's .pyc files are validated against the
                    # source mtime, and COPY keeps the mtimes from the context.
                    info = tar.gettarinfo(str(path), "deps/" + path.relative_to(deps).as_posix())
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    if info.isfile():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
            _add_dir(tar, "function")
            made: set[str] = set()
            for rel in sorted(source.files):
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    parent = "/".join(parts[:i])
                    if parent not in made:
                        made.add(parent)
                        _add_dir(tar, f"function/{parent}")
                info = tarfile.TarInfo(f"function/{rel}")
                info.size = source.files.size(rel)
                info.mode = _FILE_MODE
                info.mtime = _MTIME
                with source.files.open(rel) as f:
                    tar.addfile(info, f)
        buf.seek(0)
        return buf

    def _docker_build(self, client: Any, context: IO[bytes], ref: str) -> None:
        tail: deque[str] = deque(maxlen=8)
        try:
            events = client.api.build(
                fileobj=context, custom_context=True, tag=ref,
                rm=True, forcerm=True, pull=False, decode=True,
            )
            for event in events:
                error = _event_error(event)
                if error is not None:
                    detail = " | ".join(line for line in tail if line)
                    raise BuildError(f"docker build failed: {error}"
                                     + (f" (last output: {detail})" if detail else ""),
                                     infrastructure=_is_infrastructure(error))
                stream = event.get("stream")
                if isinstance(stream, str) and stream.strip():
                    tail.append(stream.strip())
        except (APIError, requests.RequestException) as exc:
            raise BuildError(f"docker build failed: {_api_message(exc)}",
                             infrastructure=_unreachable(exc)) from exc

    def _push(self, client: Any, repo: str, tag: str) -> str:
        digest: str | None = None
        last = ""
        try:
            for event in client.api.push(repo, tag=tag, stream=True, decode=True):
                error = _event_error(event)
                if error is not None:
                    raise BuildError(f"push to registry {self.registry} failed: {error}"
                                     f"{_registry_hint(error)}",
                                     infrastructure=_is_infrastructure(error))
                aux = event.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
                if event.get("status"):
                    last = str(event["status"])
        except (APIError, requests.RequestException) as exc:
            message = _api_message(exc)
            raise BuildError(f"push to registry {self.registry} failed: {message}"
                             f"{_registry_hint(message)}", infrastructure=True) from exc
        if digest is None:
            raise BuildError(f"push to registry {self.registry} failed: the engine reported "
                             f"no digest (last status: {last or 'none'})")
        return digest

    def _remove_local(self, client: Any, name: str, keep: frozenset[str]) -> bool:
        repo = self.repository(name)
        try:
            images = client.api.images(name=repo)
        except (APIError, requests.RequestException) as exc:
            raise BuildError(f"the Docker engine failed to list images: "
                             f"{_api_message(exc)}",
                             infrastructure=not isinstance(exc, APIError)) from exc
        done = True
        for image in images:
            digests = image.get("RepoDigests") or []
            if any(d.rpartition("@")[2] in keep for d in digests if d.startswith(repo + "@")):
                continue
            refs = [ref for ref in (image.get("RepoTags") or []) + digests
                    if ref.startswith((repo + ":", repo + "@"))]
            for ref in refs:
                try:
                    client.api.remove_image(ref)
                except (ImageNotFound, NotFound):
                    pass  # gone already (removing a tag also drops its digest references)
                except APIError as exc:
                    if exc.status_code != 409:
                        raise BuildError(f"cannot remove image {ref}: {_api_message(exc)}"
                                         ) from exc
                    # A container (a pod still draining, a paused one) uses the image:
                    # untagging it now would leave a nameless <none> image behind when
                    # that container goes. Try again on a later pass.
                    done = False
        return done

    async def _deps(self, requirements: bytes) -> Path:
        """The directory of installed requirements, from cache or a fresh pip run."""
        key = hashlib.sha256(
            requirements + b"\0" + sys.implementation.cache_tag.encode() + b"\0"
            + PIP_MODE.encode()
        ).hexdigest()[:24]
        root = self.work_dir / "deps"
        final = root / key
        if final.is_dir():
            return final
        async with self._lock(f"deps:{key}"):
            if final.is_dir():
                return final
            root.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
            try:
                target = scratch / "site"
                output = await self._pip(scratch, target, requirements)
                log.debug("pip installed requirements %s: %s", key, output[-200:])
                target.mkdir(exist_ok=True)  # requirements.txt with only comments
                try:
                    os.rename(target, final)
                except OSError:
                    if not final.is_dir():  # lost a race with another process: fine
                        raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return final

    async def _pip(self, scratch: Path, target: Path, requirements: bytes) -> str:
        # pip reads the requirements as packaging parsed them, one canonical line each,
        # never the uploaded bytes (see validate.parse_requirements).
        try:
            reqs = parse_requirements(requirements)
        except ValidationError as exc:
            raise BuildError(str(exc)) from None
        req_file = scratch / "requirements.txt"
        req_file.write_text("".join(f"{r}\n" for r in reqs), encoding="utf-8")
        home = scratch / "home"
        home.mkdir()
        pip_log = scratch / "pip.log"
        cmd = [
            self.pip_python, "-m", "pip", "install", "--target", str(target),
            "--requirement", str(req_file), "--no-input", "--disable-pip-version-check",
            "--no-warn-script-location", "--progress-bar", "off",
            # Wheels only: an sdist would run its setup.py or build backend here, on the
            # host, as this server's user. No wheel for a package fails the build.
            "--only-binary=:all:",
            # The console shows only the last error; the debug log says why each
            # candidate file was skipped (pip_failure_message reads it).
            "--log", str(pip_log),
        ]
        env = pip_environment(os.environ, home=home, cache_dir=self.work_dir / "pip-cache",
                              user_config=_user_pip_config(os.environ))
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=scratch, start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.pip_timeout)
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            raise BuildError(f"installing requirements.txt took longer than "
                             f"{self.pip_timeout:.0f} s; pin fewer or smaller packages") from None
        except BaseException:  # cancelled (the server stops): leave no pip behind
            _kill_group(proc)
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise BuildError(pip_failure_message(text, requirements, _tail(pip_log)))
        return text


# Part of the deps cache key: how pip was told to install. Directories installed under
# an older mode (sdists allowed) are not reused.
PIP_MODE = "only-binary"
# Variables of the server's environment that pip may see; everything else (etcd and
# registry addresses, tokens, the user's shell) is left out. Upper-cased names.
_PIP_ENV_EXACT = frozenset({"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                            "PIP_CONFIG_FILE"})
# PIP_* settings that would change what --target/--only-binary ask for, or where pip
# reads requirements from.
_PIP_ENV_DROPPED = frozenset({
    "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_SRC", "PIP_EDITABLE",
    "PIP_REQUIREMENT", "PIP_NO_BINARY", "PIP_ONLY_BINARY", "PIP_PREFER_BINARY",
    "PIP_NO_BUILD_ISOLATION", "PIP_REQUIRE_VIRTUALENV", "PIP_LOG", "PIP_LOG_FILE",
    "PIP_PYTHON", "PIP_ISOLATED",
})


def pip_environment(environ: Mapping[str, str], *, home: Path, cache_dir: Path,
                    user_config: Path | None = None) -> dict[str, str]:
    """The whole environment of the build's pip: nothing of the server's but what pip
    needs to reach the package index (PIP_* settings, proxies, CA certificates).

    HOME is a scratch directory, so pip reads no dotfiles of the server's user but its
    pip configuration, passed as PIP_CONFIG_FILE (``user_config``) unless one is set.
    """
    env = {
        "PATH": environ.get("PATH", os.defpath),
        "HOME": str(home),
        # pip decodes files and prints with the locale: make it UTF-8 whatever the server's.
        "LANG": "C.UTF-8",
        "PIP_CACHE_DIR": str(cache_dir),
    }
    for key, value in environ.items():
        upper = key.upper()
        if upper.startswith("PIP_"):
            if upper not in _PIP_ENV_DROPPED:
                env[key] = value
        elif upper.endswith("_PROXY") or upper in _PIP_ENV_EXACT:
            env[key] = value
    if user_config is not None and not any(k.upper() == "PIP_CONFIG_FILE" for k in env):
        env["PIP_CONFIG_FILE"] = str(user_config)
    return env


def _user_pip_config(environ: Mapping[str, str]) -> Path | None:
    """The server user's own pip.conf, which pip would not find under a scratch HOME."""
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
    for candidate in (Path(xdg) / "pip" / "pip.conf",
                      Path(environ.get("HOME", "~")) / ".pip" / "pip.conf"):
        candidate = candidate.expanduser()
        if candidate.is_file():
            return candidate
    return None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, limit: int = 2 * 1024 * 1024) -> str:
    """The last ``limit`` bytes of pip's debug log (it may be long), or ''."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - limit, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# pip's debug log, one line per candidate file it left out (index/package_finder.py).
_NO_SOURCES_RE = re.compile(r"Skipping link: No sources permitted for ([A-Za-z0-9._-]+)")
_BAD_TAGS_RE = re.compile(r"Skipping link: none of the wheel's tags \(([^)]*)\) are "
                          r"compatible[^:]*: (\S+)")
_NOT_FOUND_RE = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)")


def _without_wheel(pip_log: str) -> dict[str, str]:
    """Projects pip skipped for want of a fitting wheel: canonical name -> what it found."""
    found: dict[str, str] = {}
    for match in _NO_SOURCES_RE.finditer(pip_log):
        found.setdefault(canonicalize_name(match.group(1)), "only a source distribution")
    for match in _BAD_TAGS_RE.finditer(pip_log):
        filename = match.group(2).split("#", 1)[0].rsplit("/", 1)[-1]
        try:
            name = parse_wheel_filename(filename)[0]
        except InvalidWheelFilename:
            continue
        found[name] = f"wheels for other platforms only (e.g. {match.group(1)})"
    return found


def pip_failure_message(output: str, requirements: bytes, pip_log: str = "") -> str:
    """A one-line explanation of a failed ``pip install -r``, naming the requirement.

    pip ends its output with the most specific error, e.g.
    ``ERROR: No matching distribution found for nosuchpkg``; that line is quoted, and
    the requirements.txt line whose project name appears in it is named. When pip's
    debug log shows it skipped that project's files for want of a wheel, the message
    says a wheel is needed: with ``--only-binary`` pip reports a project that has only
    an sdist exactly as one that does not exist.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    meaningful = [ln for ln in lines if not ln.startswith("[notice]")]
    quote = (errors or meaningful or ["pip failed without output"])[-1]
    quote = quote.removeprefix("ERROR:").strip()
    blob = " ".join(errors or meaningful[-5:]).lower().replace("_", "-")
    missing = _NOT_FOUND_RE.search(" ".join(errors))
    missing_project = canonicalize_name(missing.group(1)) if missing is not None else None
    culprit = None
    try:
        listed = requirement_lines(requirements)
    except ValidationError:
        listed = []  # validated before pip ran; nothing to name if it somehow is not
    for number, line, req in listed:
        name = canonicalize_name(req.name)
        if name == missing_project:
            culprit = (number, line, name)
            break
        # The name as a whole word: "six" must not match inside "sixty".
        if re.search(rf"(?<![a-z0-9.-]){re.escape(name)}(?![a-z0-9-])", blob):
            culprit = (number, line, name)
    no_wheel = _without_wheel(pip_log)
    if missing_project is not None and missing_project in no_wheel:
        project = missing_project
        if culprit is None:
            what = f"package {project!r} (needed by your requirements)"
        elif culprit[2] == project:
            what = f"requirement {culprit[1]!r} (requirements.txt line {culprit[0]})"
        else:  # a dependency of the line pip named
            what = (f"package {project!r} (needed by {culprit[1]!r}, requirements.txt line "
                    f"{culprit[0]})")
        return (f"{what} has no wheel for this server (CPython "
                f"{sys.version_info.major}.{sys.version_info.minor} on Linux "
                f"{platform.machine()}): the package index has {no_wheel[project]}. A wheel "
                "is needed: builds install wheels only, so that no package code runs on the "
                "server. Pin a version of it that publishes a wheel, or use another package.")
    if culprit is not None:
        number, line, _ = culprit
        return (f"requirement {line!r} (requirements.txt line {number}) could not be "
                f"installed: {quote}. Check the package name and version.")
    return f"installing requirements.txt failed: {quote}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = _FILE_MODE
    info.mtime = _MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = _DIR_MODE
    info.mtime = _MTIME
    tar.addfile(info)


def _event_error(event: Any) -> str | None:
    if not isinstance(event, dict):
        return None
    if "error" in event or "errorDetail" in event:
        detail = event.get("errorDetail") or {}
        message = event.get("error") or (detail.get("message") if isinstance(detail, dict)
                                         else None)
        return str(message or event).strip()
    return None


def _api_message(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc) or type(exc).__name__


def _unreachable(exc: Exception) -> bool:
    """The engine could not be reached or failed on its side (not a bad request)."""
    if isinstance(exc, APIError):
        return exc.status_code is None or (
            exc.status_code >= 500 and _is_infrastructure(_api_message(exc)))
    return True  # requests.RequestException: connection refused, timeout, reset


def _registry_hint(message: str) -> str:
    if "connection refused" in message.lower():
        return " (is the registry running? `allinone serve` starts one)"
    return ""
