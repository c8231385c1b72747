"""``allinone serve`` flags reach the Settings the server runs with (no server started)."""

from __future__ import annotations

import pytest

from allinone import app
from allinone.cli import build_parser, cmd_serve
from allinone.config import Settings


def served_settings(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Settings:
    seen: list[Settings] = []
    monkeypatch.setattr(app, "serve", seen.append)
    assert cmd_serve(build_parser().parse_args(["serve", *argv])) == 0
    (settings,) = seen
    return settings


def test_queue_limit_flag_sets_the_activators_queue_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert served_settings(monkeypatch, "--queue-limit", "3").queue_limit == 3


def test_queue_limit_defaults_to_the_settings_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert served_settings(monkeypatch).queue_limit == Settings().queue_limit == 10_000


@pytest.mark.parametrize("bad, why", [("0", "0 must be at least 1"),
                                      ("many", "'many' is not a whole number")])
def test_queue_limit_refuses_what_is_not_a_positive_count(
        bad: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serve", "--queue-limit", bad])
    assert exc.value.code == 2
    assert f"--queue-limit: {why}" in capsys.readouterr().err
