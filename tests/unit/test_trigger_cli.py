"""`allinone trigger create` flags become the API's spec."""

from __future__ import annotations

from pathlib import Path

from allinone.cli import build_parser, trigger_spec_from_args


def spec_of(*argv: str) -> dict[str, object]:
    return trigger_spec_from_args(build_parser().parse_args(["trigger", "create", "t", *argv]))


def test_schedule_flags() -> None:
    assert spec_of("--schedule", "*/5 * * * *", "--function", "f", "--timezone", "Europe/Berlin",
                   "--concurrency-policy", "Forbid", "--starting-deadline", "30",
                   "--max-attempts", "5", "--backoff", "2") == {
        "target": {"function": "f"}, "schedule": "*/5 * * * *", "timezone": "Europe/Berlin",
        "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 30.0,
        "retry": {"maxAttempts": 5, "backoffSeconds": 2.0}}


def test_watch_flags_resolve_folders(tmp_path: Path) -> None:
    assert spec_of("--watch", str(tmp_path / "in"), "--pattern", "*.png", "--pattern", "*.jpg",
                   "--event", "created", "--recursive", "--workflow", "w",
                   "--sink", str(tmp_path / "out"), "--max-content-bytes", "100") == {
        "target": {"workflow": "w"},
        "watch": {"path": str(tmp_path / "in"), "patterns": ["*.png", "*.jpg"],
                  "events": ["created"], "recursive": True, "maxContentBytes": 100},
        "sink": {"directory": str(tmp_path / "out")}}


# `allinone trigger events t | head`: the events as the API lists them, many of them.
_EVENTS_TO_CLOSED_PIPE = '''
import sys
from allinone import cli
from allinone.client import Client

event = {"time": "2026-11-30T12:00:00Z", "status": "Succeeded", "latencySeconds": 0.01,
         "input": {"name": "x" * 100}}
Client.trigger_events = lambda self, name, limit: [event] * 20000
sys.exit(cli.main(["trigger", "events", "t"]))
'''


def test_a_reader_that_goes_away_ends_the_cli_quietly() -> None:
    """A closed pipe (`... | head`) ends any command with SIGPIPE's status, no traceback."""
    import os
    import signal
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-c", _EVENTS_TO_CLOSED_PIPE], stdout=write,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write)
    assert done.stderr.decode() == ""
    assert done.returncode == 128 + signal.SIGPIPE
