"""Debouncing of file-system notifications: one write is one event.

inotify reports a single ``cp`` as created + several modified + closed; an editor's
save as a burst over a few milliseconds. :class:`Debouncer` collects touches per path
and hands a path out once it has been quiet for ``quiet`` seconds, or once it has been
touched continuously for ``max_wait`` seconds (so a file that is appended to forever
is still examined now and then). What happened is then decided by comparing the file
with what the trigger has seen (:func:`allinone.triggers.files.classify`), never from
the notification kinds, which differ between tools.

Pure: time is passed in. Invariant: a path is handed out at most once per burst.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Burst:
    first: float
    last: float


class Debouncer:
    def __init__(self, quiet: float = 0.2, max_wait: float = 5.0) -> None:
        self.quiet = quiet
        self.max_wait = max_wait
        self._bursts: dict[str, _Burst] = {}

    def touch(self, path: str, now: float) -> None:
        b = self._bursts.get(path)
        if b is None:
            self._bursts[path] = _Burst(now, now)
        else:
            b.last = max(b.last, now)

    def _due_at(self, b: _Burst) -> float:
        return min(b.last + self.quiet, b.first + self.max_wait)

    def due(self, now: float) -> list[str]:
        """Paths whose burst is over at ``now``, in order of their first touch."""
        out = [(b.first, p) for p, b in self._bursts.items() if self._due_at(b) <= now]
        for _, p in out:
            del self._bursts[p]
        return [p for _, p in sorted(out)]

    def next_due(self) -> float | None:
        """When the next burst ends (None when nothing is pending)."""
        return min((self._due_at(b) for b in self._bursts.values()), default=None)

    def __len__(self) -> int:
        return len(self._bursts)
