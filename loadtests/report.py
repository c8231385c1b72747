"""The load tests' one statistics module and the report: percentiles, the KPA's expected
count, criteria, time series, the JSON report. Pure: no locust, gevent or matplotlib.

Times in a report are seconds since the scenario's ``t0`` (set-up finished), latencies
milliseconds; a record is ``[t_start, ms, ok, name, error]``. Percentiles interpolate
linearly between closest ranks (numpy's default). A :class:`Criterion` carries one
sentence a person can read without the code.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.autoscaler.kpa import decider_spec

REPORT_VERSION = 1
REPORT_KEYS = (  # every report has these (the unit tests pin the shape)
    "version", "scenario", "passed", "short", "server", "function", "deployed", "scaling",
    "tick_seconds", "started_at", "duration_s", "params", "criteria", "figures",
    "requests", "failures", "events", "samples", "timeline", "records", "errors")
EXPECTED_FORMULA = ("expected = min(maxScale, max(minScale, ceil(concurrency / "
                    "(target x targetUtilizationPercentage / 100))))")
Records = Sequence[Sequence[Any]]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear interpolation; None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    return data[lo] + (data[min(lo + 1, len(data) - 1)] - data[lo]) * (pos - lo)


def summarize(values: Sequence[float], qs: Sequence[int] = (50, 95, 99),
              digits: int = 3) -> dict[str, float | int | None]:
    """count, min, mean, the ``qs`` percentiles (``pNN``) and max, rounded to ``digits``."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)
    return {"count": len(values), "min": r(min(values, default=None)),
            "mean": r(sum(values) / len(values)) if values else None,
            **{f"p{q}": r(percentile(values, q)) for q in qs}, "max": r(max(values, default=None))}


def fmt_ms(x: float | None) -> str:
    """'-' when missing, 1 decimal below 10 ms, else whole ms."""
    return "-" if x is None else f"{x:.1f}" if abs(x) < 10 else f"{x:.0f}"


def per_pod_target(scaling: Mapping[str, Any] | None) -> float:
    """Concurrent requests one pod should carry, as the KPA computes it (10 x 70 % = 7)."""
    return round(decider_spec(scaling or {}).target_value, 9)


def expected_replicas(concurrency: float, scaling: Mapping[str, Any] | None) -> int:
    """The pods the KPA settles on for a steady ``concurrency`` (EXPECTED_FORMULA)."""
    s = objects.scaling({"scaling": scaling or {}})
    raw = math.ceil(concurrency / per_pod_target(s)) if concurrency > 0 else 0
    return int(min(s["maxScale"], max(s["minScale"], raw)))


@dataclass
class Criterion:
    name: str
    passed: bool
    measured: Any
    limit: Any
    detail: str


def no_failures(records: Records, what: str = "requests") -> Criterion:
    failed = [r for r in records if not r[2]]
    if not records:
        return Criterion("no failed request", False, 0, 0,
                         f"no {what} were made, so nothing was shown to work")
    return Criterion("no failed request", not failed, len(failed), 0,
                     f"all {len(records)} {what} succeeded" if not failed else
                     f"{len(failed)} of {len(records)} {what} failed, first: "
                     f"{failed[0][4] or '?'}")


def first_time(samples: Sequence[Mapping[str, Any]], key: str, pred: Any,
               after: float = float("-inf")) -> float | None:
    """The time of the first sample at or after ``after`` whose ``key`` satisfies ``pred``."""
    return next((float(s["t"]) for s in samples if s["t"] >= after
                 and s.get(key) is not None and pred(s[key])), None)


def reaches_within(samples: Sequence[Mapping[str, Any]], target: int, start: float,
                   within: float, key: str = "ready") -> Criterion:
    """``key`` replicas reach ``target`` no later than ``within`` s after ``start``."""
    t = first_time(samples, key, lambda v: v >= target, after=start)
    took = None if t is None else round(t - start, 3)
    if took is None:
        peak = max((s.get(key) or 0 for s in samples if s["t"] >= start), default=0)
        detail = f"{key} replicas never reached {target} (peak {peak})"
    else:
        detail = f"{key} replicas reached {target} {took:.1f} s after the step (limit {within:g} s)"
    return Criterion(f"{key} replicas reach {target}", took is not None and took <= within,
                     took, within, detail)


def at_most(name: str, measured: float | None, limit: float, unit: str, what: str) -> Criterion:
    """``measured <= limit``; None (never happened) fails."""
    shown = "never" if measured is None else f"{measured:.3g} {unit}"
    return Criterion(name, measured is not None and measured <= limit, measured, limit,
                     f"{what}: {shown} (limit {limit:g} {unit})")


def latency_threshold(label: str, values: Sequence[float], q: float,
                      limit_ms: float | None) -> Criterion | None:
    """An optional latency criterion; None when the threshold is off (0 or None)."""
    if not limit_ms:
        return None
    return at_most(f"{label} p{q:g} <= {limit_ms:g} ms", percentile(values, q), limit_ms,
                   "ms", f"{label} p{q:g}")


def timeline(records: Records, end: float | None = None,
             bucket: float = 1.0) -> list[dict[str, Any]]:
    """Per bucket of answer time (0 to ``end``, default the last answer): ``t``, ``rps``,
    ``fail_rps``, ``p50_ms`` and ``p95_ms`` (None without answers)."""
    done = [(r[0] + r[1] / 1000.0, r[1], bool(r[2])) for r in records]
    stop = max(end if end is not None else 0.0, *(d[0] for d in done), 0.0)
    n = max(1, math.ceil(stop / bucket - 1e-9))
    buckets: list[list[tuple[float, bool]]] = [[] for _ in range(n)]
    for t_end, ms, ok in done:
        buckets[min(n - 1, max(0, int(t_end // bucket)))].append((ms, ok))

    def q(b: list[tuple[float, bool]], p: float) -> float | None:
        v = percentile([ms for ms, _ in b], p)
        return None if v is None else round(v, 3)
    return [{"t": round(i * bucket, 3), "rps": round(len(b) / bucket, 3),
             "fail_rps": round(sum(1 for _, ok in b if not ok) / bucket, 3),
             "p50_ms": q(b, 50), "p95_ms": q(b, 95)} for i, b in enumerate(buckets)]


def request_stats(records: Records) -> dict[str, Any]:
    """Totals and per-name latency summaries of the recorded requests."""
    names = sorted({str(r[3]) for r in records})
    return {"total": len(records), "failures": sum(1 for r in records if not r[2]),
            "by_name": {name: {**summarize([float(r[1]) for r in records if r[3] == name]),
                               "failures": sum(1 for r in records if r[3] == name and not r[2])}
                        for name in names}}


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


def write_report(report: Report | Mapping[str, Any], path: Path) -> dict[str, Any]:
    data = report.as_dict() if isinstance(report, Report) else dict(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return data


def load_report(path: Path) -> dict[str, Any]:
    """A report as :func:`write_report` wrote it; ValueError when it is not one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in REPORT_KEYS if k not in data] if isinstance(data, dict) else ["*"]
    if missing:
        raise ValueError(f"{path} is not a load test report (missing {missing})")
    return dict(data)
