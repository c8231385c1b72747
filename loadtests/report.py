"""The load tests' one statistics module and their report: percentiles, criteria, time
series, the JSON report; pure (no locust, gevent or matplotlib). Times are seconds since
the scenario's ``t0`` (set-up finished), latencies ms; a record is ``[t_start, ms, ok,
name, error]``. Percentiles interpolate linearly between closest ranks (numpy's
default). A :class:`Criterion` carries one sentence a person can read without the code.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_VERSION = 1
REPORT_KEYS = (  # every report has these (the unit tests pin the shape)
    "version", "scenario", "passed", "short", "server", "function", "deployed", "scaling",
    "tick_seconds", "started_at", "duration_s", "params", "criteria", "figures",
    "requests", "failures", "events", "samples", "timeline", "records", "errors")
Records = Sequence[Sequence[Any]]


def percentile(values: Iterable[float], q: float, digits: int | None = None) -> float | None:
    """The ``q``-th percentile (0-100; rounded to ``digits``); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    out = data[lo] + (data[min(lo + 1, len(data) - 1)] - data[lo]) * (pos - lo)
    return out if digits is None else round(out, digits)


def summarize(values: Sequence[float], qs: Sequence[int] = (50, 95, 99),
              digits: int = 3) -> dict[str, float | int | None]:
    """count, min, mean, the ``qs`` percentiles (``pNN``) and max, rounded to ``digits``."""
    return {"count": len(values), "min": percentile(values, 0, digits),
            "mean": round(sum(values) / len(values), digits) if values else None,
            **{f"p{q}": percentile(values, q, digits) for q in qs},
            "max": percentile(values, 100, digits)}


@dataclass
class Criterion:
    name: str
    passed: bool
    measured: Any
    limit: Any
    detail: str


def at_most(name: str, measured: float | None, limit: float, unit: str, what: str) -> Criterion:
    """``measured <= limit``; None (never happened) fails."""
    shown = "never" if measured is None else f"{measured:.3g} {unit}"
    return Criterion(name, measured is not None and measured <= limit, measured, limit,
                     f"{what}: {shown} (limit {limit:g} {unit})")


def timeline(records: Records, end: float | None = None,
             bucket: float = 1.0) -> list[dict[str, Any]]:
    """Per bucket of answer time (0 to ``end``, default the last answer): ``t``, ``rps``,
    ``fail_rps``, ``p50_ms`` and ``p95_ms`` (None without answers)."""
    done = [(r[0] + r[1] / 1000.0, r[1], bool(r[2])) for r in records]
    n = max(1, math.ceil(max([end or 0.0, *(d[0] for d in done)]) / bucket - 1e-9))
    buckets: list[list[tuple[float, bool]]] = [[] for _ in range(n)]
    for t_end, ms, ok in done:
        buckets[min(n - 1, max(0, int(t_end // bucket)))].append((ms, ok))
    return [{"t": round(i * bucket, 3), "rps": round(len(b) / bucket, 3),
             "fail_rps": round(sum(not ok for _, ok in b) / bucket, 3),
             **{f"p{q}_ms": percentile([ms for ms, _ in b], q, 3) for q in (50, 95)}}
            for i, b in enumerate(buckets)]


def request_stats(records: Records) -> dict[str, Any]:
    """Totals and per-name latency summaries of the recorded requests."""
    return {"total": len(records), "failures": sum(not r[2] for r in records),
            "by_name": {name: {**summarize([float(r[1]) for r in records if r[3] == name]),
                               "failures": sum(r[3] == name and not r[2] for r in records)}
                        for name in sorted({str(r[3]) for r in records})}}


def failure_summary(records: Records, limit: int = 20) -> list[dict[str, Any]]:
    """Distinct errors with their counts, most frequent first."""
    counts = Counter((str(r[3]), str(r[4] or "unknown error")) for r in records if not r[2])
    return [{"name": n, "error": e, "occurrences": c} for (n, e), c in counts.most_common(limit)]


def pod_usage(pods: Iterable[Mapping[str, Any]]) -> tuple[float, int]:
    """A function's CPU (% of a core) and memory (bytes): sums over its pods'
    ``status.usage`` (the server's own 2 s sampling); a pod not sampled yet adds 0."""
    usage = [p.get("status", {}).get("usage") or {} for p in pods]
    return (round(sum(float(u.get("cpuPercent") or 0) for u in usage), 2),
            sum(int(u.get("memoryBytes") or 0) for u in usage))


@dataclass
class Report:
    """One scenario run; :meth:`as_dict` is the JSON written next to the PNG."""

    scenario: str
    short: bool = False
    server: str = ""
    function: str = ""
    deployed: bool = False
    scaling: dict[str, Any] = field(default_factory=dict)
    tick_seconds: float = 2.0
    started_at: float = 0.0
    duration_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    records: list[list[Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.criteria) and not self.errors and all(c.passed for c in self.criteria)

    def as_dict(self) -> dict[str, Any]:
        out = {"version": REPORT_VERSION, **asdict(self), "passed": self.passed,
               "duration_s": round(self.duration_s, 3), "requests": request_stats(self.records),
               "failures": failure_summary(self.records),
               "timeline": timeline(self.records, end=self.duration_s)}
        return {k: out[k] for k in REPORT_KEYS}


def write_report(report: Report, path: Path) -> None:
    """Whole or not at all: written beside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report.as_dict(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_report(path: Path) -> dict[str, Any]:
    """A report as :func:`write_report` wrote it; ValueError when it is not one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in REPORT_KEYS if k not in data] if isinstance(data, dict) else ["*"]
    if missing:
        raise ValueError(f"{path} is not a load test report (missing {missing})")
    return dict(data)
