"""An embedded single-member etcd as a supervised child process.

``allinone serve`` starts one of these unless it is pointed at a running etcd. The
invariants it keeps:

- etcd listens and advertises on 127.0.0.1 only, client and peer, so an embedded etcd
  is never reachable from another host and two servers on one machine only collide if
  they are given the same ports.
- All state is under ``data_dir``: restarting an :class:`EtcdProcess` on the same
  directory brings back the same keys and the same revision counter, which is what
  lets watchers resume from the last revision they saw.
- ``start`` returns only once ``GET /health`` answers ``{"health": "true"}``, i.e. the
  member has elected itself leader and serves linearizable requests. It refuses to
  start when something already listens on the client port, because the health check
  would otherwise be answered by that stranger and look like success.
- The peer port is resolved once, when the object is built (a free port unless one is
  given), so a stop/start cycle of the same object reuses it.

The child gets its own session (so Ctrl-C on a terminal reaches only ``allinone serve``,
which stops etcd in order) and a clean environment: inherited ``ETCD_*`` variables would
silently override or conflict with our flags.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
from pathlib import Path

from allinone.services.process import ChildProcess, HealthProbe, log_tail

ETCD_BINARY = "/usr/bin/etcd"
HOST = "127.0.0.1"
MEMBER_NAME = "allinone"
# etcd 3.4 refuses to run on architectures other than amd64 unless told the name of the
# (unsupported) architecture it is running on, in Go's spelling.
_GOARCH = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "i686": "386",
           "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def etcd_health(answer: tuple[int, bytes] | None) -> bool:
    """Whether an answer to ``GET /health`` says healthy: 200 with ``"health": "true"``."""
    if answer is None or answer[0] != 200:
        return False
    try:
        body = json.loads(answer[1])
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("health")).lower() == "true"


async def etcd_healthy(url: str, timeout: float = 1.0) -> bool:
    """True when the etcd at ``url`` answers ``GET /health`` healthy (a one-off probe)."""
    probe = HealthProbe(f"{url}/health")
    try:
        return etcd_health(await probe.get(timeout))
    finally:
        await probe.close()


class EtcdProcess(ChildProcess):
    """``/usr/bin/etcd`` for one state directory, on ``127.0.0.1:client_port``.

    ``start`` may be called again after ``stop`` (the integration tests restart etcd
    under a live watch this way). The log is appended to, one header line per start, so
    the history of restarts stays readable in one file.
    """

    name = "etcd"

    def __init__(
        self,
        data_dir: Path,
        client_port: int,
        peer_port: int | None = None,
        *,
        log_path: Path | None = None,
        binary: str = ETCD_BINARY,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = client_port
        # Chosen now, not at start, so that restarts of this object keep the peer URL
        # recorded in the WAL (a single member also starts fine on another one).
        self.peer_port = peer_port if peer_port is not None else free_port()
        self.log_path = Path(log_path) if log_path is not None else (
            self.data_dir.parent / "etcd.log")
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.probe = HealthProbe(f"{self.url}/health")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def command(self) -> list[str]:
        """The exact command line ``start`` runs."""
        return [
            self.binary,
            "--name", MEMBER_NAME,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{MEMBER_NAME}={self.peer_url}",
            "--initial-cluster-state", "new",
            # A single member has no peers to lose: the election timeout only delays its
            # first self-election, so a short one cuts start-up from ~0.75 s to ~0.1 s.
            # (etcd wants election timeout >= 5 heartbeats.)
            "--heartbeat-interval", "50",
            "--election-timeout", "250",
            "--logger", "zap",
            "--log-outputs", "stderr",
            # History is kept for an hour: long enough for any watcher that was cut off
            # by an etcd restart to resume, short enough that the database stays small
            # while pods churn.
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", "1h",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        machine = platform.machine().lower()
        if machine not in ("x86_64", "amd64"):
            env["ETCD_UNSUPPORTED_ARCH"] = os.environ.get(
                "ETCD_UNSUPPORTED_ARCH", _GOARCH.get(machine, machine))
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Check the ground and fork etcd (quick, blocking calls kept out of coroutines)."""
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RuntimeError(
                f"etcd is not installed ({self.binary} is missing): run `allinone setup` "
                "(or `apt-get install etcd-server`), or point allinone at a running etcd"
            )
        if _port_in_use(self.client_port):
            raise RuntimeError(
                f"cannot start etcd: something already listens on {HOST}:{self.client_port}; "
                "stop it, choose another etcd port, or use that etcd as an external one"
            )
        # etcd wants its data directory private (0700) and warns otherwise.
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"--- allinone: starting {' '.join(cmd)}\n".encode())
            log.flush()
            # The child keeps its own copy of the descriptor after ours is closed.
            return subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self._env(),
            )

    async def start(self, timeout: float = 20.0) -> None:
        """Start etcd and wait until it is healthy; raises RuntimeError saying why not."""
        if self.running:
            return
        proc = self._proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if proc.poll() is not None:
                self._proc = None
                raise RuntimeError(
                    f"etcd exited with code {proc.returncode} while starting "
                    f"(log {self.log_path}): {self.log_tail()}"
                )
            if await etcd_healthy(self.url, timeout=0.5):
                return
            await asyncio.sleep(0.05)
        tail = self.log_tail()
        await self.stop()
        raise RuntimeError(
            f"etcd did not become healthy on {self.url} within {timeout:.0f} s "
            f"(log {self.log_path}): {tail}"
        )

    async def healthy(self) -> bool:
        """etcd answers ``GET /health`` (what the supervisor checks, over one connection)."""
        return etcd_health(await self.probe.get(timeout=1.0))

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the log, for error messages."""
        return log_tail(self.log_path, lines)
