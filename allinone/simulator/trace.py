"""Invocation traces: what the simulator replays, read from the two formats traces come in.

A :class:`Trace` is a list of invocations sorted by arrival: ``(arrival s, function
index, duration s)`` in three parallel lists (the engine's hot loop walks them by index,
so no per-invocation object exists). Arrival is seconds from the trace's start.

Formats:

- **CSV, one invocation per row**, header ``function,arrival_ms,duration_ms`` (other
  columns are ignored). Rows may come in any order; the trace is sorted by arrival
  (stable, so equal arrivals keep file order).
- **Azure Functions 2019** (``invocations_per_function_md.anon.dNN.csv``): one row per
  function, ``HashFunction`` and per-minute counts in columns ``1`` .. ``1440``. Rows of
  the same ``HashFunction`` (the same code under several triggers) are added up.
  Durations come from the companion ``function_durations_percentiles.anon.dNN.csv``
  (``HashFunction``, ``Average`` and, when present, ``percentile_Average_0/1/25/50/75/
  99/100``) or from one fixed ``duration_ms`` for every invocation.

The spreading rule (Azure counts -> arrival times), stated so that anyone can reproduce
a run: for each function, ``random.Random(f"{seed}/{HashFunction}")`` draws, minute by
minute in order, the ``n`` arrivals of minute ``m`` uniformly in ``[60 m, 60 (m + 1))``
seconds (sorted), and for each arrival in that order its duration: with percentiles,
by inverse transform through the piecewise-linear quantile function over the points
(0, p0), (0.01, p1), (0.25, p25), (0.5, p50), (0.75, p75), (0.99, p99), (1, p100);
else the ``Average``. One generator per function means adding or dropping a function
never moves another function's arrivals.

Bad input raises :class:`TraceError` naming the file, the row (1 = the header) and the
column, and what would be accepted.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

CSV_COLUMNS = ("function", "arrival_ms", "duration_ms")
AZURE_MINUTES = 1440
AZURE_FUNCTION = "HashFunction"
# The quantile points of the Azure durations file, as (probability, column).
AZURE_PERCENTILES = (
    (0.0, "percentile_Average_0"), (0.01, "percentile_Average_1"),
    (0.25, "percentile_Average_25"), (0.5, "percentile_Average_50"),
    (0.75, "percentile_Average_75"), (0.99, "percentile_Average_99"),
    (1.0, "percentile_Average_100"),
)


class TraceError(ValueError):
    """A trace file that cannot be read; the message says where and what to fix."""


@dataclass
class Trace:
    """Invocations sorted by arrival; ``fn[i]`` indexes ``functions``."""

    functions: list[str] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    fn: list[int] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def span(self) -> float:
        """Seconds from the trace's start to its last arrival (0 for an empty trace)."""
        return self.arrival[-1] if self.arrival else 0.0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.functions, 0)
        for i in self.fn:
            out[self.functions[i]] += 1
        return out

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, float, float]],
                  names: Iterable[str] = ()) -> Trace:
        """A trace from ``(function, arrival s, duration s)`` in any order; ``names``
        lists functions first (also those without a row in this trace)."""
        index: dict[str, int] = {}
        for name in names:
            index.setdefault(name, len(index))
        triples = []
        for name, at, dur in rows:
            i = index.get(name)
            if i is None:
                i = index[name] = len(index)
            triples.append((at, i, dur))
        triples.sort(key=lambda r: r[0])  # stable: equal arrivals keep their order
        return cls(
            functions=list(index),
            arrival=[r[0] for r in triples],
            fn=[r[1] for r in triples],
            duration=[r[2] for r in triples],
        )

    def rows(self) -> Iterator[tuple[str, float, float]]:
        for at, i, dur in zip(self.arrival, self.fn, self.duration, strict=True):
            yield self.functions[i], at, dur

    def write_csv(self, path: Path) -> None:
        """Write the CSV format (milliseconds, 3 decimals: microsecond resolution)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for name, at, dur in self.rows():
                w.writerow((name, f"{at * 1000:.3f}", f"{dur * 1000:.3f}"))
        tmp.replace(path)  # nothing half-written


def _number(path: Path, row: int, column: str, text: str | None) -> float:
    if text is None or text.strip() == "":
        raise TraceError(f"{path}: row {row}, column {column!r}: empty; a number of "
                         "milliseconds >= 0 is needed")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}: row {row}, column {column!r}: {text!r} is not a number "
                         "(milliseconds, e.g. 1500 or 12.5)") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{path}: row {row}, column {column!r}: {text!r} must be a finite "
                         "number >= 0")
    return value


def _open_csv(path: Path) -> tuple[csv.DictReader[str], list[str], TextIO]:
    try:
        f = open(path, newline="", encoding="utf-8")  # closed by the caller
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or [])
    return reader, header, f


def read_csv(path: Path) -> Trace:
    """The one-invocation-per-row CSV format (see the module docstring)."""
    reader, header, f = _open_csv(path)
    try:
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise TraceError(
                f"{path}: row 1 (header): missing column(s) {missing}; the header must "
                f"name {','.join(CSV_COLUMNS)} (got {','.join(header) or 'nothing'})")
        rows = []
        for n, rec in enumerate(reader, start=2):
            name = (rec.get("function") or "").strip()
            if not name:
                raise TraceError(f"{path}: row {n}, column 'function': empty; every row "
                                 "names its function")
            at = _number(path, n, "arrival_ms", rec.get("arrival_ms")) / 1000.0
            dur = _number(path, n, "duration_ms", rec.get("duration_ms")) / 1000.0
            rows.append((name, at, dur))
    finally:
        f.close()
    return Trace.from_rows(rows)


@dataclass(frozen=True)
class DurationDist:
    """One function's durations in ms: the quantile points, or just the average."""

    average: float
    quantiles: tuple[tuple[float, float], ...] = ()

    def draw(self, rng: random.Random) -> float:
        if not self.quantiles:
            return self.average
        u = rng.random()
        ps = [p for p, _ in self.quantiles]
        j = min(max(bisect.bisect_right(ps, u), 1), len(ps) - 1)
        (p0, v0), (p1, v1) = self.quantiles[j - 1], self.quantiles[j]
        return v0 if p1 == p0 else v0 + (v1 - v0) * (u - p0) / (p1 - p0)


def read_azure_durations(path: Path) -> dict[str, DurationDist]:
    """``function_durations_percentiles``: HashFunction -> its duration distribution (ms)."""
    reader, header, f = _open_csv(path)
    try:
        for col in (AZURE_FUNCTION, "Average"):
            if col not in header:
                raise TraceError(f"{path}: row 1 (header): no {col!r} column; an Azure "
                                 "durations file has HashFunction, Average and "
                                 "percentile_Average_* columns")
        with_q = all(c in header for _, c in AZURE_PERCENTILES)
        out: dict[str, DurationDist] = {}
        for n, rec in enumerate(reader, start=2):
            name = (rec.get(AZURE_FUNCTION) or "").strip()
            if not name:
                raise TraceError(f"{path}: row {n}, column {AZURE_FUNCTION!r}: empty")
            avg = _number(path, n, "Average", rec.get("Average"))
            qs: tuple[tuple[float, float], ...] = ()
            if with_q:
                qs = tuple((p, _number(path, n, c, rec.get(c))) for p, c in AZURE_PERCENTILES)
                if any(b[1] < a[1] for a, b in itertools.pairwise(qs)):
                    raise TraceError(f"{path}: row {n}: percentile_Average_* columns must "
                                     "not decrease from 0 to 100")
            out[name] = DurationDist(avg, qs)
    finally:
        f.close()
    return out


def spread_minute_counts(
    name: str, counts: list[int], dist: DurationDist, seed: int
) -> list[tuple[float, float]]:
    """``(arrival s, duration s)`` of one function's per-minute counts, by the stated rule."""
    rng = random.Random(f"{seed}/{name}")
    out: list[tuple[float, float]] = []
    for minute, n in enumerate(counts):
        if n <= 0:
            continue
        base = 60.0 * minute
        offsets = sorted(rng.random() * 60.0 for _ in range(n))
        for off in offsets:
            out.append((base + off, dist.draw(rng) / 1000.0))
    return out


def read_azure(path: Path, *, durations: Path | None = None,
               duration_ms: float | None = None, seed: int = 0) -> Trace:
    """Azure Functions 2019 per-minute counts, spread by the rule of the module docstring."""
    if durations is None and duration_ms is None:
        raise TraceError(f"{path}: an Azure counts trace needs durations: pass the companion "
                         "durations file or a fixed duration in ms")
    if duration_ms is not None and (not math.isfinite(duration_ms) or duration_ms < 0):
        raise TraceError(f"duration_ms must be a finite number >= 0, got {duration_ms}")
    dists = read_azure_durations(durations) if durations is not None else {}
    reader, header, f = _open_csv(path)
    try:
        if AZURE_FUNCTION not in header:
            raise TraceError(f"{path}: row 1 (header): no {AZURE_FUNCTION!r} column; an Azure "
                             "invocations file has HashFunction and minute columns 1..1440")
        minutes = [str(m) for m in range(1, AZURE_MINUTES + 1) if str(m) in header]
        if not minutes or minutes != [str(m) for m in range(1, len(minutes) + 1)]:
            raise TraceError(f"{path}: row 1 (header): minute columns must be 1, 2, ... "
                             f"(at most {AZURE_MINUTES}) without gaps")
        per_fn: dict[str, list[int]] = {}
        for n, rec in enumerate(reader, start=2):
            name = (rec.get(AZURE_FUNCTION) or "").strip()
            if not name:
                raise TraceError(f"{path}: row {n}, column {AZURE_FUNCTION!r}: empty")
            counts = per_fn.setdefault(name, [0] * len(minutes))
            for j, col in enumerate(minutes):
                text = (rec.get(col) or "").strip()
                if not text.isdigit():
                    raise TraceError(f"{path}: row {n}, column {col!r}: {text!r} is not a "
                                     "count (a whole number >= 0)")
                counts[j] += int(text)
    finally:
        f.close()
    rows: list[tuple[str, float, float]] = []
    for name, counts in per_fn.items():
        dist = dists.get(name)
        if dist is None:
            if duration_ms is None:
                raise TraceError(f"{durations}: no durations for function {name!r} of {path}; "
                                 "add its row or pass a fixed duration in ms as fallback")
            dist = DurationDist(duration_ms)
        rows.extend((name, at, dur) for at, dur in spread_minute_counts(name, counts, dist, seed))
    return Trace.from_rows(rows, per_fn)


def sniff(path: Path) -> str:
    """``"csv"`` or ``"azure"`` from the header line."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    cols = [c.strip() for c in header.strip().split(",")]
    if AZURE_FUNCTION in cols:
        return "azure"
    if all(c in cols for c in CSV_COLUMNS):
        return "csv"
    raise TraceError(f"{path}: row 1 (header): neither {','.join(CSV_COLUMNS)} nor an Azure "
                     f"header with {AZURE_FUNCTION} and minute columns; got {header.strip()!r}")


def load(path: Path, *, durations: Path | None = None, duration_ms: float | None = None,
         seed: int = 0) -> Trace:
    """Read either format, chosen by the header."""
    if sniff(path) == "azure":
        return read_azure(path, durations=durations, duration_ms=duration_ms, seed=seed)
    return read_csv(path)
