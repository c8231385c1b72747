"""Synthetic traces of the shapes that matter for autoscaling, seeded and reproducible.

Every shape is a pure function of its parameters and a seed: the same call gives the
same trace, byte for byte once written. Each function draws from its own
``random.Random(f"{seed}/{shape}/{name}")``, so adding a function never moves another.

Shapes (rates in requests per second, times in seconds):

- ``steady``: a Poisson process at ``rate``.
- ``diurnal``: a Poisson process whose rate follows a day,
  ``rate x (1 + amplitude x sin(2 pi (t / 86400 - 1/4)))``: lowest at midnight,
  highest at noon, mean ``rate`` over a whole day (drawn by thinning).
- ``bursty``: on/off. ``on`` seconds of Poisson arrivals at ``rate``, then ``off``
  seconds of silence, repeated; the first period starts on.
- ``spiky``: a Poisson base at ``rate`` plus spikes: spikes arrive as a Poisson process
  every ``spike_every`` s on average, each ``spike_size`` requests spread uniformly
  over one second.
- ``rare``: ``per_day`` invocations per day at uniform random times (Azure's long
  tail: most functions are invoked a few times an hour or less).

Durations are lognormal with median ``duration_ms`` and shape ``sigma`` (0 = fixed).
:func:`day_mix` is the 24-hour, 100-function, about one-million-invocation trace of the
speed benchmark.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from allinone.simulator.trace import Trace

DAY = 86400.0
SHAPES = ("steady", "diurnal", "bursty", "spiky", "rare")


@dataclass(frozen=True)
class Shape:
    """One function's load: ``kind`` is one of :data:`SHAPES`; unused fields are ignored."""

    kind: str
    rate: float = 1.0
    amplitude: float = 0.8
    on: float = 60.0
    off: float = 240.0
    spike_every: float = 600.0
    spike_size: int = 50
    per_day: float = 24.0
    duration_ms: float = 100.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SHAPES:
            raise ValueError(f"unknown shape {self.kind!r}; one of {', '.join(SHAPES)}")
        for name in ("rate", "per_day", "duration_ms", "sigma", "on", "off", "spike_every"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{self.kind}: {name} must be a finite number >= 0, got {v}")
        if not 0 <= self.amplitude <= 1:
            raise ValueError(f"diurnal: amplitude must be between 0 and 1, got {self.amplitude}")
        if self.kind == "bursty" and self.on <= 0:
            raise ValueError("bursty: on must be > 0 seconds")
        if self.spike_size < 0:
            raise ValueError(f"spiky: spike_size must be >= 0, got {self.spike_size}")


def _poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    out: list[float] = []
    if rate <= 0:
        return out
    t = start + rng.expovariate(rate)
    while t < end:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def _diurnal(rng: random.Random, s: Shape, seconds: float) -> list[float]:
    peak = s.rate * (1 + s.amplitude)
    out = []
    for t in _poisson(rng, peak, 0.0, seconds):
        rate = s.rate * (1 + s.amplitude * math.sin(2 * math.pi * (t / DAY - 0.25)))
        if rng.random() * peak < rate:  # thinning: keep with probability rate / peak
            out.append(t)
    return out


def _bursty(rng: random.Random, s: Shape, seconds: float) -> list[float]:
    out: list[float] = []
    t = 0.0
    while t < seconds:
        out += _poisson(rng, s.rate, t, min(t + s.on, seconds))
        t += s.on + s.off
    return out


def _spiky(rng: random.Random, s: Shape, seconds: float) -> list[float]:
    out = _poisson(rng, s.rate, 0.0, seconds)
    if s.spike_every > 0:
        for at in _poisson(rng, 1.0 / s.spike_every, 0.0, seconds):
            out += [t for t in (at + rng.random() for _ in range(s.spike_size)) if t < seconds]
    out.sort()
    return out


def _rare(rng: random.Random, s: Shape, seconds: float) -> list[float]:
    n = round(s.per_day * seconds / DAY)
    return sorted(rng.random() * seconds for _ in range(n))


_ARRIVALS: dict[str, Callable[[random.Random, Shape, float], list[float]]] = {
    "steady": lambda rng, s, secs: _poisson(rng, s.rate, 0.0, secs),
    "diurnal": _diurnal,
    "bursty": _bursty,
    "spiky": _spiky,
    "rare": _rare,
}


def function_rows(name: str, shape: Shape, seconds: float,
                  seed: int) -> list[tuple[str, float, float]]:
    """One function's ``(name, arrival s, duration s)`` rows."""
    rng = random.Random(f"{seed}/{shape.kind}/{name}")
    arrivals = _ARRIVALS[shape.kind](rng, shape, seconds)
    median = shape.duration_ms / 1000.0
    if shape.sigma == 0:
        return [(name, t, median) for t in arrivals]
    mu = math.log(median) if median > 0 else -30.0
    return [(name, t, rng.lognormvariate(mu, shape.sigma)) for t in arrivals]


def generate(functions: dict[str, Shape], seconds: float, seed: int = 0) -> Trace:
    """A trace of ``seconds`` with one shape per function name."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"the trace must last more than 0 seconds, got {seconds}")
    rows: list[tuple[str, float, float]] = []
    for name, shape in functions.items():
        rows += function_rows(name, shape, seconds, seed)
    return Trace.from_rows(rows, functions)


def uniform(kind: str, count: int, seconds: float, seed: int = 0, **params: float) -> Trace:
    """``count`` functions ``f000``... of one shape."""
    if count < 1:
        raise ValueError(f"at least 1 function, got {count}")
    shape = Shape(kind, **params)  # type: ignore[arg-type]
    return generate({f"{kind}-{i:03d}": shape for i in range(count)}, seconds, seed)


def day_mix(seed: int = 0, seconds: float = DAY) -> Trace:
    """100 functions over a day, about 1.0 million invocations, Azure-like skew.

    A few busy functions carry most of the load and most functions are rare: 6 steady
    (0.55 rps), 6 diurnal (mean 0.55 rps), 6 bursty (3 rps, 2 min on / 8 min off), 6
    spiky (0.05 rps + 200-request spikes every 15 min) and 76 rare (12 to 500 a day).
    Durations are lognormal around 20-400 ms.
    """
    mix: dict[str, Shape] = {}
    for i in range(6):
        mix[f"steady-{i}"] = Shape("steady", rate=0.55, duration_ms=50 + 40 * i, sigma=0.5)
        mix[f"diurnal-{i}"] = Shape("diurnal", rate=0.55, amplitude=0.9,
                                    duration_ms=100 + 50 * i, sigma=0.6)
        mix[f"bursty-{i}"] = Shape("bursty", rate=3.0, on=120, off=480,
                                   duration_ms=200, sigma=0.4)
        mix[f"spiky-{i}"] = Shape("spiky", rate=0.05, spike_every=900, spike_size=200,
                                  duration_ms=80, sigma=0.3)
    for i in range(76):
        mix[f"rare-{i:02d}"] = Shape("rare", per_day=12 + (i * 37) % 489,
                                     duration_ms=20 + (i * 53) % 380, sigma=0.5)
    return generate(mix, seconds, seed)
