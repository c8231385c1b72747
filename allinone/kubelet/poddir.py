"""Per-pod socket directories under the state dir: ``pods/POD/http.sock``.

Invariants:

- ``pods/`` is 0700 and owned by the server: nobody else on the host walks into it.
  A pod's container sees only its own directory (bind-mounted), never ``pods/`` or a
  sibling, so no pod can reach another pod's socket.
- A pod directory is 0700 and owned by the pod's uid (when the server runs as root,
  pods run as ``nobody``: :data:`~allinone.runtime.base.POD_USER`); otherwise pods run
  as the server's own unprivileged uid and the directory stays the server's. Either
  way only that pod and the server can use it.
- A Unix socket path is limited to 107 bytes; for a long state dir,
  :meth:`PodDirs.connect_path` goes through an ``O_PATH`` descriptor of the pod's
  directory (``/proc/self/fd/N/http.sock``), held until the pod's directory is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from allinone.runtime.base import POD_USER, SOCKET_NAME

SUN_PATH_MAX = 107  # bytes of a Unix socket path, without the terminating NUL


def pod_user() -> tuple[str, int | None, int | None]:
    """``(user for Docker, uid, gid to chown pod dirs to or None)`` for this server."""
    if os.geteuid() == 0:
        uid, gid = (int(x) for x in POD_USER.split(":"))
        return POD_USER, uid, gid
    return f"{os.geteuid()}:{os.getegid()}", None, None


class PodDirs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.user, self._uid, self._gid = pod_user()
        self._fds: dict[str, int] = {}

    def path(self, pod: str) -> Path:
        return self.root / pod

    def socket_path(self, pod: str) -> str:
        """Where the pod's socket is on the host (shown in the Pod's status)."""
        return str(self.path(pod) / SOCKET_NAME)

    def create(self, pod: str) -> str:
        """Make (or make private again) the pod's directory; returns its host path."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        d = self.path(pod)
        d.mkdir(exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        if self._uid is not None and self._gid is not None:
            os.chown(d, self._uid, self._gid)
        return str(d)

    def connect_path(self, pod: str) -> str:
        """A path to connect to the pod's socket, short enough for ``sun_path``."""
        full = self.socket_path(pod)
        if len(full.encode()) <= SUN_PATH_MAX:
            return full
        fd = self._fds.get(pod)
        if fd is None:
            fd = self._fds[pod] = os.open(self.path(pod), os.O_PATH | os.O_DIRECTORY)
        return f"/proc/self/fd/{fd}/{SOCKET_NAME}"

    def remove(self, pod: str) -> None:
        fd = self._fds.pop(pod, None)
        if fd is not None:
            os.close(fd)
        shutil.rmtree(self.path(pod), ignore_errors=True)

    def existing(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        return []
