"""What a file trigger sees: scanning a folder, telling what changed, reading content.

A watched folder is compared with what the trigger has *seen* (path -> size and
modification time, kept in etcd): :func:`classify` is the single rule for both live
notifications (after debouncing) and the catch-up scan at start, so a file that
appeared while the server was down is delivered exactly like one dropped while it ran.

Hostile input: anyone who can write into the folder controls names and contents. Only
regular files are considered; symbolic links are never followed (a link to a secret
would otherwise hand it to a function), reads are bounded by ``maxContentBytes``, and a
scan stops at ``MAX_FILES`` entries.
"""

from __future__ import annotations

import base64
import errno
import fnmatch
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CREATED, MODIFIED, DELETED = "created", "modified", "deleted"
EVENTS = (CREATED, MODIFIED, DELETED)
MAX_FILES = 100_000


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def classify(seen: FileStat | None, now: FileStat | None) -> str | None:
    """The event a file's change makes, or None when nothing changed."""
    if seen is None:
        return CREATED if now is not None else None
    if now is None:
        return DELETED
    return MODIFIED if now != seen else None


def diff(seen: dict[str, FileStat], current: dict[str, FileStat]
         ) -> list[tuple[str, str, FileStat]]:
    """Every change from ``seen`` to ``current``: (relative path, event, stat), by path.

    For a deletion the stat is the last one seen.
    """
    out: list[tuple[str, str, FileStat]] = []
    for rel in sorted(set(seen) | set(current)):
        kind = classify(seen.get(rel), current.get(rel))
        if kind is not None:
            st = current.get(rel) or seen[rel]
            out.append((rel, kind, st))
    return out


def stat_file(root: Path, rel: str) -> FileStat | None:
    """The file's stat when it is a regular file (not followed through a link)."""
    try:
        st = os.lstat(root / rel)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileStat(st.st_size, st.st_mtime_ns)


def scan(root: Path, patterns: list[str], recursive: bool) -> dict[str, FileStat]:
    """Regular files under ``root`` whose names match, by path relative to ``root``."""
    out: dict[str, FileStat] = {}
    stack = [root]
    while stack and len(out) < MAX_FILES:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(Path(e.path))
                    continue
                if not e.is_file(follow_symlinks=False) or not matches(e.name, patterns):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            out[Path(e.path).relative_to(root).as_posix()] = FileStat(st.st_size, st.st_mtime_ns)
            if len(out) >= MAX_FILES:
                break
    return out


def read_content(root: Path, rel: str, limit: int) -> tuple[str | None, str | None]:
    """(base64 content, None), or (None, why it was left out)."""
    path = root / rel
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "the path is a symbolic link; links are not followed"
        return None, f"the file could not be read ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > limit:
            return None, (f"the file has {st.st_size} bytes, over maxContentBytes ({limit}); "
                          "raise spec.watch.maxContentBytes to receive it")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            return None, f"the file grew over maxContentBytes ({limit}) while being read"
        return base64.b64encode(b"".join(chunks)).decode("ascii"), None
    finally:
        os.close(fd)
