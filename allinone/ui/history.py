"""The dashboard's recent history: per function, a point every period for a few minutes.

Each point holds what the autoscaler and the activator say now (desired and ready
pods, stable and panic concurrency, panic mode) and what the activator's counters say
about the last window (requests per second, p50 and p95 latency, cold starts). Latency
quantiles are read off the Prometheus histogram the activator already keeps, the way
Prometheus' ``histogram_quantile`` does (linear within a bucket), from the difference of
the cumulative bucket counts across the window: no second copy of every latency.

Pure parts: :func:`quantile` and :class:`History` (``record(now, readings)`` with time
passed in, bounded memory: points older than ``keep_seconds`` are dropped, a function
not in a reading is forgotten). :func:`read_counters` reads a metrics registry.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

KEEP_SECONDS = 300.0
PERIOD_SECONDS = 2.0
# The window rps and quantiles are computed over: several periods, so that one slow
# request does not make p95 jump from nothing to everything and back.
WINDOW_SECONDS = 10.0


@dataclass
class Counters:
    """Cumulative counters of one function: requests, cold starts, latency buckets."""

    requests: float = 0.0
    cold_starts: float = 0.0
    # (upper bound, cumulative count) in increasing order, the last bound +Inf
    buckets: list[tuple[float, float]] = field(default_factory=list)


def quantile(q: float, before: list[tuple[float, float]],
             after: list[tuple[float, float]]) -> float | None:
    """The q-quantile of the observations between two readings of a histogram.

    None without observations. In the +Inf bucket: the largest finite bound (as
    Prometheus answers). Bucket lists of different shape count as no earlier reading.
    """
    if not after:
        return None
    if [b for b, _ in before] != [b for b, _ in after]:
        before = [(b, 0.0) for b, _ in after]
    deltas = [(b, a - p) for (b, a), (_, p) in zip(after, before, strict=True)]
    total = deltas[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cum in deltas:
        if cum >= rank:
            if math.isinf(bound):
                return lower
            in_bucket = cum - below
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / in_bucket
        lower, below = bound, cum
    return lower


@dataclass
class Reading:
    """What one function looks like at one moment (from the components and counters)."""

    desired: int | None
    ready: int
    stable: float
    panic: float
    panic_mode: bool
    counters: Counters


class History:
    def __init__(self, keep_seconds: float = KEEP_SECONDS,
                 window_seconds: float = WINDOW_SECONDS) -> None:
        self.keep = keep_seconds
        self.window = window_seconds
        self._raw: dict[str, deque[tuple[float, Counters]]] = {}
        self._points: dict[str, deque[dict[str, Any]]] = {}

    def record(self, now: float, readings: Mapping[str, Reading]) -> None:
        for gone in set(self._points) - set(readings):
            del self._points[gone]
            del self._raw[gone]
        for name, r in readings.items():
            raw = self._raw.setdefault(name, deque())
            points = self._points.setdefault(name, deque())
            raw.append((now, r.counters))
            # The oldest reading still inside the window is the window's start.
            while len(raw) > 1 and raw[1][0] <= now - self.window:
                raw.popleft()
            t0, c0 = raw[0]
            dt = now - t0
            c = r.counters
            points.append({
                "t": round(now, 3), "desired": r.desired, "ready": r.ready,
                "stable": round(r.stable, 3), "panic": round(r.panic, 3),
                "panicMode": r.panic_mode,
                "rps": round((c.requests - c0.requests) / dt, 3) if dt > 0 else 0.0,
                "p50": _ms(quantile(0.5, c0.buckets, c.buckets)),
                "p95": _ms(quantile(0.95, c0.buckets, c.buckets)),
                "requests": int(c.requests), "coldStarts": int(c.cold_starts),
            })
            while points and points[0]["t"] < now - self.keep:
                points.popleft()

    def latest(self) -> dict[str, dict[str, Any]]:
        return {name: pts[-1] for name, pts in self._points.items() if pts}

    def series(self, name: str) -> list[dict[str, Any]] | None:
        pts = self._points.get(name)
        return None if pts is None else list(pts)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def read_counters(registry: CollectorRegistry, functions: Iterable[str]) -> dict[str, Counters]:
    """Each function's requests, cold starts and latency buckets from the metrics."""
    out = {name: Counters() for name in functions}
    buckets: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        for s in family.samples:
            fn = s.labels.get("function")
            if fn not in out:
                continue
            if s.name == "allinone_invocations_total":
                out[fn].requests += s.value
            elif s.name == "allinone_cold_starts_total":
                out[fn].cold_starts = s.value
            elif s.name == "allinone_request_latency_seconds_bucket":
                buckets.setdefault(fn, {})[float(s.labels["le"])] = s.value
    for fn, b in buckets.items():
        out[fn].buckets = sorted(b.items())
    return out
