"""What every supervised child process (embedded etcd, the registry) needs the same way:
stopping it in order, quoting the end of its log in an error message, its health probe,
and pidfiles.

The health probe (:class:`HealthProbe`) asks one URL over one kept-alive connection:
a new HTTP session and TCP connection per probe was the largest part of an idle
server's CPU (py-spy, 40 warm functions). The connection is dropped after any failure
and whenever the child is stopped, so a restarted child is never asked over its
predecessor's socket, and a hung child costs a probe its time-out, as before.

Pidfiles make ``allinone serve`` crash-only: a server killed with SIGKILL leaves its
children running (they live in their own sessions), holding their ports. The next
``allinone serve`` on the same state directory reads ``STATE/run/NAME.pid`` and stops
the process it names, before checking ports. A pidfile records the pid *and* the
process's start time (field 22 of ``/proc/PID/stat``, clock ticks since boot), so a pid
reused by an unrelated process since then is never signalled: a process is recognised
by (pid, start time), never by its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)


def log_tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log on one line, for error messages."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


async def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    # wait(timeout) in a thread returns as soon as the process exits and leaves no
    # thread behind when it does not (unlike wait_for around a plain wait()).
    try:
        await asyncio.to_thread(proc.wait, grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.to_thread(proc.wait)


class HealthProbe:
    """``GET url`` over one kept-alive connection: ``(status, body)``, or None when the
    child did not answer within ``timeout`` (refused, reset, timed out).

    The session belongs to the event loop that made it; asked from another loop (a test
    fixture may start a child on one loop and use it on the next), the probe leaves the
    old session to that loop and opens a new one.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, timeout: float) -> tuple[int, bytes] | None:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # One connection is all a probe needs; keep-alive keeps it open between asks.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            self._loop = loop
        try:
            async with self._session.get(
                    self.url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            await self.close()  # the next probe opens a new connection
            return None

    async def close(self) -> None:
        """Drop the connection (the next ``get`` opens a new one)."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()


class ChildProcess:
    """What every embedded child (etcd, the registry) has the same way: its Popen, its
    pid, whether it runs, stopping it (:func:`stop_process`) and its health probe
    (``probe``, set by the subclass). Subclasses spawn."""

    _proc: subprocess.Popen[bytes] | None = None
    probe: HealthProbe

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the child has not exited after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        await self.probe.close()  # never ask the next process over this one's socket
        await stop_process(proc, grace)


# -- pidfiles -------------------------------------------------------------------------


def parse_stat(text: str) -> tuple[str, int]:
    """(state letter, start time in clock ticks) from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so fields are counted from the last ``)``.
    """
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return rest[0], int(rest[19])


def process_start_time(pid: int) -> int | None:
    """The start time of a live process, or None when there is none (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, start = parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else start


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_time: int
    command: tuple[str, ...] = ()

    def alive(self) -> bool:
        """The very process recorded is still running (not a reuse of its pid)."""
        return process_start_time(self.pid) == self.start_time


def write_pidfile(path: Path, pid: int, command: list[str] | tuple[str, ...] = ()) -> None:
    """Record ``pid`` with its start time; atomic (temporary file, then rename)."""
    start = process_start_time(pid)
    if start is None:
        return  # it already exited: nothing to recognise later
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"pid": pid, "startTime": start, "command": list(command)}))
    os.replace(tmp, path)


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        raw = json.loads(path.read_text())
        return PidRecord(int(raw["pid"]), int(raw["startTime"]),
                         tuple(str(c) for c in raw.get("command", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def terminate(record: PidRecord, grace: float = 5.0) -> bool:
    """Stop a process that is not our child: SIGTERM, then SIGKILL after ``grace``.

    Returns True if the recorded process was running. Blocking (polls /proc): call it
    before the event loop starts or in a thread.
    """
    if not record.alive():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not record.alive():
            return True
        time.sleep(0.02)
    if record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
    return True


def stop_leftovers(run_dir: Path, grace: float = 5.0) -> list[str]:
    """Stop every child an earlier run of this state directory left behind.

    Returns one line per process stopped, for the log. Pidfiles of processes that are
    gone are just removed.
    """
    stopped: list[str] = []
    if not run_dir.is_dir():
        return stopped
    for path in sorted(run_dir.glob("*.pid")):
        record = read_pidfile(path)
        if record is not None and terminate(record, grace):
            stopped.append(f"{path.stem} (pid {record.pid})")
        path.unlink(missing_ok=True)
    return stopped
