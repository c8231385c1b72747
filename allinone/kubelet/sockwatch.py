"""Wakes a starting pod's readiness probe when its socket file appears (inotify).

The shim imports the function, then binds its Unix socket and listens at once, so the
socket file appearing in ``pods/POD/`` means "ready, or within microseconds of it".
Probing every few milliseconds until then cost the server a wake-up and a failed
connect per starting pod per probe interval (40 pods starting together: ~10,000 a
second); with this watch the cost is one notification per pod.

Invariants:

- One watchdog observer (one inotify instance, one thread) per kubelet, watching the
  pods root recursively; started lazily at the first pod, stopped with the kubelet.
- A notification only sets the pod's asyncio event (through ``call_soon_threadsafe``):
  the probe decides; a missed or spurious notification costs time, never correctness,
  because the kubelet also re-checks on a slow timer (:data:`SLOW_POLL`).
- If inotify cannot be used (no watches left, no watchdog backend), :attr:`active` is
  False and the kubelet probes on its fast timer as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from allinone.runtime.base import SOCKET_NAME

log = logging.getLogger(__name__)

# s between socket checks while a watch is active (a safety net for a lost notification).
SLOW_POLL = 0.1


class SocketWatch:
    """Sets a pod's asyncio event whenever ``pods/POD/http.sock`` is created."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.active = False
        self._events: dict[str, asyncio.Event] = {}
        self._observer: Any = None
        self._failed = False

    def watch(self, pod: str, event: asyncio.Event) -> None:
        """Set ``event`` whenever the pod's socket file is created, until :meth:`forget`."""
        self._events[pod] = event

    def forget(self, pod: str) -> None:
        self._events.pop(pod, None)

    def _touched(self, path: str) -> None:
        p = Path(path)
        if p.name == SOCKET_NAME:
            ev = self._events.get(p.parent.name)
            if ev is not None:
                ev.set()

    def start(self) -> None:
        """Start the observer (idempotent; a failure is logged once and not retried)."""
        if self._observer is not None or self._failed:
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()
        touched = self._touched

        class Handler(FileSystemEventHandler):
            def on_created(self, event: FileSystemEvent) -> None:
                loop.call_soon_threadsafe(touched, os.fsdecode(event.src_path))

        try:
            observer = Observer()
            observer.daemon = True
            observer.schedule(Handler(), str(self.root), recursive=True)
            observer.start()
        except Exception as exc:  # e.g. the inotify watch limit: probing still works
            self._failed = True
            log.warning("cannot watch %s for pod sockets (%s); probing on a timer instead",
                        self.root, exc)
            return
        self._observer = observer
        self.active = True

    def stop(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()  # a daemon thread: it ends on its own
            except Exception as exc:
                log.debug("stopping the socket watch: %s", exc)
            self._observer = None
        self.active = False
