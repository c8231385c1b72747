"""What every supervised child process (embedded etcd, the registry) needs the same way:
stopping it in order, and quoting the end of its log in an error message."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from pathlib import Path


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
