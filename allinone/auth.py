"""The management API's bearer token: where it lives, who must present it.

``allinone serve`` creates a random token in ``STATE_DIR/token`` at its first start
(mode 0600, readable by the server's user only) and keeps it across restarts. The
management API (every path under ``/api/``) then requires ``Authorization: Bearer
TOKEN`` when the server listens on anything but a loopback address, or always with
``serve --require-token``. Triggers (``/function/NAME``), ``/healthz`` and ``/metrics``
stay open, as HTTP triggers are in Knative. On a loopback host without
``--require-token`` a token is not checked at all (a wrong one is ignored, not refused).

The CLI sends ``--token``, else ``$ALLINONE_TOKEN``, else the token file of the state
directory (``$ALLINONE_STATE_DIR``) when the server it talks to is on a loopback
address: a local token is never sent to another machine.

Standard library only: the CLI imports this module.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

TOKEN_FILENAME = "token"
PROTECTED_PREFIX = "/api/"
_TOKEN_BYTES = 32


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; False for 0.0.0.0 and any other name."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def token_required(host: str, require_token: bool) -> bool:
    return require_token or not is_loopback(host)


def ensure_token(path: Path) -> str:
    """The token in ``path``, created (0600, atomically) when there is none yet.

    Crash-only: the token is written to a private temporary file and linked into place,
    so a reader never sees a half-written token, and two servers starting at once on one
    state directory agree on one token (the second link fails; it reads the first).
    """
    try:
        return read_token(path, strict=True) or _create_token(path)
    except FileNotFoundError:
        return _create_token(path)


def _create_token(path: Path) -> str:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = read_token(path, strict=True)
            if not existing:
                raise RuntimeError(f"{path} exists but holds no token: remove it and "
                                   "start the server again") from None
            return existing
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return token


def read_token(path: Path, *, strict: bool = False) -> str | None:
    """The token in ``path``; None if it is empty. Unreadable: None, or raise if strict.

    A token file that others may read is made private again (its owner's umask or a
    copy may have widened it): the token is as secret as the API it opens.
    """
    try:
        st = path.stat()
        if strict and st.st_mode & 0o077:
            os.chmod(path, 0o600)
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if strict:
            raise
        return None
    except (OSError, UnicodeDecodeError):
        if strict:
            raise
        return None
    return text or None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token`` (constant-time compare)."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())
