"""The result sink: successful results written as files into a folder.

Each successful delivery writes ``NAME.json`` (NAME is the event's file name, or
``TRIGGER-SCHEDULEDTIME`` for a schedule) holding the result. When the result is an
object with ``"files": {"name": "<base64>"}``, each file is decoded and written beside
it, and the JSON keeps ``{"name": {"file": ..., "size": ...}}`` in its place.

The result comes from function code and is hostile. So: every name is reduced to a
plain file name of ``[A-Za-z0-9._-]`` (path separators, ``..``, leading dots and
control characters cannot survive :func:`safe_name`), at most ``MAX_FILES`` files of at
most ``MAX_FILE_BYTES`` and ``MAX_TOTAL_BYTES`` together, all checked before anything is
written; files are written to a temporary name opened with ``O_EXCL|O_NOFOLLOW`` and
renamed into place, so a reader never sees half a file and a planted link is replaced,
never followed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

MAX_FILES = 64
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
MAX_NAME = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SinkError(Exception):
    """The result cannot be written; the message says why."""


def safe_name(name: object) -> str:
    """A plain file name made from ``name`` that cannot leave the sink folder."""
    if not isinstance(name, str):
        raise SinkError(f"file name must be a string, got {type(name).__name__}")
    base = _UNSAFE.sub("_", name).lstrip(".")
    base = base[:MAX_NAME]
    if not base.strip("_"):
        raise SinkError(f"file name {name[:80]!r} has no usable characters")
    return base


def _write(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, directory / name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def plan(result: Any) -> tuple[Any, dict[str, bytes]]:
    """The JSON to write and the decoded files, all checked; raises :class:`SinkError`."""
    if not isinstance(result, dict) or "files" not in result:
        return result, {}
    files = result["files"]
    if not isinstance(files, dict):
        raise SinkError('result "files" must be an object {"name": "<base64>"}')
    if len(files) > MAX_FILES:
        raise SinkError(f'result has {len(files)} files; the sink writes at most {MAX_FILES}')
    decoded: dict[str, bytes] = {}
    listing: dict[str, Any] = {}
    total = 0
    for raw_name, content in files.items():
        name = safe_name(raw_name)
        if name in decoded:
            raise SinkError(f"two result files map to the same name {name!r}")
        if not isinstance(content, str):
            raise SinkError(f"result file {name!r} must be a base64 string")
        if len(content) > (MAX_FILE_BYTES * 4) // 3 + 4:
            raise SinkError(f"result file {name!r} is over {MAX_FILE_BYTES} bytes")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise SinkError(f"result file {name!r} is not valid base64") from None
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise SinkError(f"result files add up to more than {MAX_TOTAL_BYTES} bytes")
        decoded[name] = data
        listing[str(raw_name)[:MAX_NAME]] = {"file": name, "size": len(data)}
    return {**result, "files": listing}, decoded


def write_result(directory: Path, event_name: str, result: Any) -> list[str]:
    """Write the result (and its files); returns the names written."""
    if not directory.is_dir():
        raise SinkError(f"sink directory {directory} does not exist; create it")
    doc, files = plan(result)
    json_name = safe_name(event_name) + ".json"
    if json_name in files:
        raise SinkError(f"result file {json_name!r} would overwrite the result JSON")
    written = []
    try:
        for name, data in files.items():
            _write(directory, name, data)
            written.append(name)
        _write(directory, json_name, json.dumps(doc, indent=2, sort_keys=True).encode())
    except OSError as exc:
        raise SinkError(f"writing to {directory} failed: {exc.strerror or exc}") from None
    written.append(json_name)
    return written
