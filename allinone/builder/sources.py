"""Content-addressed source archives: the uploaded bytes, stored by their sha256.

etcd keeps only ``spec.source.sha256``; the bytes live here, under the state directory,
as ``ROOT/ab/abcdef...`` (the first two hex digits fan the files out over 256
directories). Because the name is the hash, a write is idempotent and two functions
with identical sources share one file.

Invariants:

- a file at a hash's path is always complete: ``put`` writes a temporary file in the
  same directory, fsyncs it and renames it into place (rename is atomic within one
  file system), so a crash leaves at worst a stray ``.tmp-*`` file, never a torn archive;
- hashes are checked to be 64 lower-case hex digits before they become paths, so a
  corrupted or hostile value cannot address a file outside the root;
- ``delete`` removes the bytes whoever else refers to them: the caller checks that no
  Function uses the hash any more.

The methods are synchronous and fast (one small file); async callers may use them as
they are or through ``asyncio.to_thread`` for large archives.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class SourceStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256. Storing the same bytes again is a no-op."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.exists():
            return sha
        for attempt in range(3):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
                break
            except FileNotFoundError:
                # A concurrent delete() removed the emptied fan-out directory between
                # our mkdir and mkstemp; make it again.
                if attempt == 2:
                    raise
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha: str) -> bytes:
        """The bytes stored under ``sha``; FileNotFoundError (an OSError) if absent."""
        path = self.path(sha)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"source archive {sha} is missing from {self.root}: upload the function again"
            ) from None

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def delete(self, sha: str) -> bool:
        """Remove the archive; True if it existed."""
        path = self.path(sha)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        try:
            path.parent.rmdir()  # only succeeds when the fan-out directory is empty
        except OSError:
            pass
        return True
