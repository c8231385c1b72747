"""Time-weighted in-flight concurrency of one function, the autoscaler's metric.

The activator calls :meth:`ConcurrencyTracker.start` when a request for the function
arrives (held requests waiting for a pod count too, that is what makes scaling from zero
see demand) and :meth:`ConcurrencyTracker.finish` when it is answered or given up. The
autoscaler loop calls :meth:`ConcurrencyTracker.take` once per tick and hands the
:class:`Sample` to the KPA as ``(sample.at, sample.average_concurrency)``.

Invariants:

- ``in_flight`` is never negative: a ``finish`` without a ``start`` is a bug in the
  caller and raises :class:`RuntimeError` instead of being hidden.
- Consecutive takes cover back-to-back intervals: every second between two takes is
  counted exactly once, which is what the KPA's time-weighted windows assume.
- Time is always passed in (``now`` from :mod:`allinone.clock`); nothing here reads a
  clock or sleeps. A ``now`` earlier than the last one seen counts as no time passing.

Worked numbers: a take at 10.0, two requests start at 10.0 and finish at 10.5, the next
take at 11.0 -> 2 x 0.5 s / 1 s = average 1.0, 2 requests started, 0 in flight.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """Concurrency over ``(at - interval, at]``: the interval since the previous take.

    ``average_concurrency`` is the time-weighted mean of in-flight requests; for an
    interval of zero length it is the in-flight count at that instant.
    """

    at: float
    interval: float
    average_concurrency: float
    requests_started: int
    in_flight: int
    last_request_at: float | None


class ConcurrencyTracker:
    """In-flight requests of one function, integrated over time between takes.

    ``now`` at construction starts the first interval; without it the first call
    (``start``, ``finish`` or ``take``) does, which loses nothing because nothing can be
    in flight before the first ``start``.
    """

    def __init__(self, now: float | None = None) -> None:
        self._in_flight = 0
        self._started = 0
        self._last_request_at: float | None = None
        self._period_start = now  # time of the previous take (or creation)
        self._changed_at = now  # time of the last in-flight change or take
        self._area = 0.0  # in-flight x seconds since the previous take

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def last_request_at(self) -> float | None:
        """When a request last started or finished; None if none ever did."""
        return self._last_request_at

    def _advance(self, now: float) -> None:
        if self._changed_at is None or self._period_start is None:
            self._period_start = self._changed_at = now
            return
        if now > self._changed_at:
            # The in-flight count was constant since the last change: add its rectangle.
            self._area += self._in_flight * (now - self._changed_at)
            self._changed_at = now

    def start(self, now: float) -> None:
        """A request arrived (forwarded or held); it counts until :meth:`finish`."""
        self._advance(now)
        self._in_flight += 1
        self._started += 1
        self._last_request_at = now

    def finish(self, now: float) -> None:
        """A request was answered, failed, timed out or was refused after being held."""
        if self._in_flight == 0:
            raise RuntimeError("ConcurrencyTracker.finish() without a matching start()")
        self._advance(now)
        self._in_flight -= 1
        self._last_request_at = now

    def take(self, now: float) -> Sample:
        """The sample since the previous take, and start the next interval at ``now``."""
        self._advance(now)
        assert self._period_start is not None and self._changed_at is not None
        interval = max(0.0, self._changed_at - self._period_start)
        average = self._area / interval if interval > 0 else float(self._in_flight)
        sample = Sample(
            at=self._changed_at,
            interval=interval,
            average_concurrency=average,
            requests_started=self._started,
            in_flight=self._in_flight,
            last_request_at=self._last_request_at,
        )
        self._area = 0.0
        self._started = 0
        self._period_start = self._changed_at
        return sample
