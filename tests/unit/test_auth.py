"""The management API's token: loopback rules, the token file, the header check, and
which token the CLI sends where."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from allinone import auth
from allinone.client import token_for


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("example.org", False),
    ("", False), ("127.0.0.1.example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "flag", "required"), [
    ("127.0.0.1", False, False), ("127.0.0.1", True, True),
    ("0.0.0.0", False, True), ("0.0.0.0", True, True), ("myhost", False, True),
])
def test_token_required(host: str, flag: bool, required: bool) -> None:
    assert auth.token_required(host, flag) is required


def test_token_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / auth.TOKEN_FILENAME
    token = auth.ensure_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.ensure_token(path) == token  # a restart keeps it
    assert [p.name for p in tmp_path.iterdir()] == [auth.TOKEN_FILENAME]  # no temp files


def test_a_widened_token_file_is_made_private_again(tmp_path: Path) -> None:
    path = tmp_path / auth.TOKEN_FILENAME
    token = auth.ensure_token(path)
    os.chmod(path, 0o644)
    assert auth.ensure_token(path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_token_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / auth.TOKEN_FILENAME
    path.write_text("")
    with pytest.raises(RuntimeError, match="holds no token"):
        auth.ensure_token(path)


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("Bearer  s3cret ", True),
    ("Bearer s3cret2", False), ("Bearer s3cre", False), ("Basic s3cret", False),
    ("s3cret", False), ("", False), (None, False), ("Bearer ", False),
])
def test_bearer_matches(header: str | None, ok: bool) -> None:
    assert auth.bearer_matches(header, "s3cret") is ok


def test_cli_token_sources(tmp_path: Path) -> None:
    (tmp_path / auth.TOKEN_FILENAME).write_text("from-file\n")
    assert token_for("http://127.0.0.1:8080", "given", tmp_path) == "given"
    assert token_for("http://127.0.0.1:8080", None, tmp_path) == "from-file"
    assert token_for("http://localhost:9", None, tmp_path) == "from-file"
    # A local token is never sent to another machine.
    assert token_for("http://192.0.2.1:8080", None, tmp_path) is None
    assert token_for("http://192.0.2.1:8080", "given", tmp_path) == "given"
    assert token_for("http://127.0.0.1:8080", None, tmp_path / "missing") is None
