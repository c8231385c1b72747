"""An embedded Docker registry (distribution v2) as a supervised child process.

Debian's packaged config turns on htpasswd auth and listens on every interface, so we
never use it: :func:`registry_config` writes our own, which listens on 127.0.0.1 only,
has no auth, keeps its storage under the state directory and enables delete (the
apiserver removes a function's image when the function is deleted).

Garbage collection (``docker-registry garbage-collect --delete-untagged``) must run
while the registry is not serving, so :meth:`RegistryProcess.start` runs it first, every
time: blobs of manifests deleted since the last start go then, and the supervisor's
idle collection (stop, collect, start) uses the same path.

Docker treats registries on 127.0.0.0/8 as insecure-allowed by default, so pushing to
``127.0.0.1:PORT`` needs no daemon configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from pathlib import Path

from allinone.services.process import ChildProcess, HealthProbe, log_tail

_log = logging.getLogger(__name__)

REGISTRY_BINARY_CANDIDATES = ("/usr/bin/docker-registry", "registry")


def registry_config(storage_dir: Path, port: int) -> str:
    """YAML for distribution v2: loopback only, no auth, delete enabled."""
    return f"""version: 0.1
log:
  level: warn
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {storage_dir}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def find_registry_binary() -> str:
    for candidate in REGISTRY_BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "the Docker registry binary is missing: run `allinone setup` "
        "(or `apt-get install docker-registry`)"
    )


async def registry_answers(address: str, timeout: float = 1.0) -> bool:
    """True when ``GET /v2/`` on ``address`` answers 200 (a v2 registry without auth)."""
    probe = HealthProbe(f"http://{address}/v2/")
    try:
        answer = await probe.get(timeout)
    finally:
        await probe.close()
    return answer is not None and answer[0] == 200


class RegistryProcess(ChildProcess):
    """``docker-registry serve CONFIG`` under our supervision.

    ``start`` returns once ``/v2/`` answers; ``stop`` sends SIGTERM and, after a few
    seconds, SIGKILL. The process is started in its own session so a Ctrl-C on the
    terminal reaches only ``allinone serve``, which then stops it in order.
    """

    name = "registry"

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.storage_dir = state_dir / "registry"
        self.config_path = state_dir / "registry.yml"
        self.log_path = state_dir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.probe = HealthProbe(f"http://{self.address}/v2/")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [find_registry_binary(), "serve", str(self.config_path)]

    async def healthy(self) -> bool:
        """``/v2/`` answers 200 (what the supervisor checks, over one connection)."""
        answer = await self.probe.get(timeout=1.0)
        return answer is not None and answer[0] == 200

    async def garbage_collect(self, timeout: float = 300.0) -> None:
        """Offline mark-and-sweep: delete blobs no tagged manifest refers to.

        Only while the registry is stopped (the caller makes sure); a failure is logged,
        never fatal: the blobs stay until the next collection.
        """
        if self.running:
            raise RuntimeError("garbage collection needs the registry stopped")
        if not self.storage_dir.is_dir():
            return
        self.config_path.write_text(registry_config(self.storage_dir, self.port))
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 (a local append)
            proc = await asyncio.create_subprocess_exec(
                find_registry_binary(), "garbage-collect", "--delete-untagged",
                str(self.config_path), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                code = -1
        if code != 0:
            _log.warning("registry garbage collection exited %s: %s", code, self._log_tail())

    async def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        await self.garbage_collect()
        self._proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the registry exited with code {self._proc.returncode}: {self._log_tail()}"
                )
            if await registry_answers(self.address, timeout=0.5):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"the registry did not answer on {self.address} within {timeout:.0f} s: "
                           f"{self._log_tail()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = find_registry_binary()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(registry_config(self.storage_dir, self.port))
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
            )

    def _log_tail(self) -> str:
        return log_tail(self.log_path, 5)
