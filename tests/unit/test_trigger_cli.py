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
