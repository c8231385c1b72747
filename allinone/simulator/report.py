"""What a simulation run reports: summary.json, one chart per function, the comparison table.

``summary.json`` (keys stable; tests and scripts read them)::

    {"functions": {NAME: FIGURES, ...}, "total": FIGURES, "run": {...}}

FIGURES: ``invocations``, ``cold_starts``, ``cold_start_share``, ``failed`` (503 queue
full + 504 timed out), ``latency_ms`` (``p50/p95/p99/mean/max`` from arrival to answer),
``queueing_ms`` (the same percentiles of the time held before a pod took the request:
queueing at zero and for a ``containerConcurrency`` slot), ``service_ms`` (latency minus
queueing), ``queueing_share`` (queueing time / all latency time), ``pod_seconds`` (pods
existing x seconds, any phase: the cost), ``paused_seconds``, ``peak_pods``,
``panic_seconds``, ``pods_started``, ``pods_resumed``. Under ``total`` the percentiles
are over every request of every function, the sums are sums and ``peak_pods`` is the
sum of the per-function peaks (an upper bound of the node's peak).
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from allinone.simulator.engine import OK, FunctionResult

PERCENTILES = (50, 95, 99)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles in ms (the value at ceil(p/100 x n)), mean and max."""
    if not values:
        return {**{f"p{p}": None for p in PERCENTILES}, "mean": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float | None] = {
        f"p{p}": round(ordered[max(0, math.ceil(p / 100 * n) - 1)] * 1000, 3)
        for p in PERCENTILES
    }
    out["mean"] = round(sum(ordered) / n * 1000, 3)
    out["max"] = round(ordered[-1] * 1000, 3)
    return out


def _figures(results: Iterable[FunctionResult]) -> dict[str, Any]:
    lat: array[float] = array("d")
    queued: array[float] = array("d")
    service: array[float] = array("d")
    inv = cold = failed = peak = started = resumed = 0
    pod_s = paused_s = panic_s = 0.0
    for r in results:
        inv += len(r.arrival)
        cold += sum(r.cold)
        for status, la, q in zip(r.status, r.latency, r.queued, strict=True):
            if status == OK:
                lat.append(la)
                queued.append(q)
                service.append(la - q)
            else:
                failed += 1
        pod_s += r.pod_seconds
        paused_s += r.paused_seconds
        panic_s += r.panic_seconds
        peak += r.peak_pods
        started += r.pods_started
        resumed += r.pods_resumed
    total_lat = sum(lat)
    return {
        "invocations": inv,
        "cold_starts": cold,
        "cold_start_share": round(cold / inv, 6) if inv else 0.0,
        "failed": failed,
        "latency_ms": percentiles(lat),
        "queueing_ms": percentiles(queued),
        "service_ms": percentiles(service),
        "queueing_share": round(sum(queued) / total_lat, 6) if total_lat > 0 else 0.0,
        "pod_seconds": round(pod_s, 3),
        "paused_seconds": round(paused_s, 3),
        "peak_pods": peak,
        "panic_seconds": round(panic_s, 3),
        "pods_started": started,
        "pods_resumed": resumed,
    }


def summary(results: Sequence[FunctionResult], run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "functions": {r.name: _figures([r]) for r in results},
        "total": _figures(results),
        "run": dict(run),
    }


def write_summary(data: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    tmp = path.with_name("summary.json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# -- the comparison table ------------------------------------------------------------

TABLE_COLUMNS = (
    ("spec", None, "{}"),
    ("cold starts", "cold_starts", "{:d}"),
    ("cold %", "cold_start_share", "{:.2%}"),
    ("pod-seconds", "pod_seconds", "{:.0f}"),
    ("peak pods", "peak_pods", "{:d}"),
    ("p50 ms", ("latency_ms", "p50"), "{:.1f}"),
    ("p99 ms", ("latency_ms", "p99"), "{:.1f}"),
    ("queueing %", "queueing_share", "{:.2%}"),
    ("panic s", "panic_seconds", "{:.0f}"),
)


def _cell(fig: Mapping[str, Any], key: Any, fmt: str) -> str:
    v = fig[key[0]][key[1]] if isinstance(key, tuple) else fig[key]
    return "-" if v is None else fmt.format(v)


def comparison_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Side by side, one line per spec: ``rows`` are (label, summary["total"])."""
    cells = [[h for h, _, _ in TABLE_COLUMNS]]
    for label, fig in rows:
        cells.append([label] + [_cell(fig, k, f) for _, k, f in TABLE_COLUMNS[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- charts --------------------------------------------------------------------------

def _bucket(span: float) -> float:
    """A bucket width giving at most ~600 points across the run: 1 s, 10 s, 60 s, ..."""
    for width in (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0):
        if span / width <= 600:
            return width
    return 3600.0


def _step_series(series: Sequence[tuple[float, Any]], end: float) -> tuple[list[float],
                                                                            list[float]]:
    xs, ys = [0.0], [0.0]
    for t, v in series:
        xs.append(t)
        ys.append(float(v))
    xs.append(end)
    ys.append(ys[-1])
    return xs, ys


def render_function(r: FunctionResult, span: float, path: Path, title: str) -> Path:
    """Load, latency and pods over time for one function, in loadtests/plot.py's look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from loadtests.plot import LEGEND

    width = _bucket(span)
    n = int(span // width) + 1
    counts = [0] * n
    per_bucket: list[list[float]] = [[] for _ in range(n)]
    colds = [0] * n
    for at, la, st, c in zip(r.arrival, r.latency, r.status, r.cold, strict=True):
        b = min(int(at // width), n - 1)
        counts[b] += 1
        colds[b] += c
        if st == OK:
            per_bucket[b].append(la * 1000)
    edges = [i * width for i in range(n + 1)]
    fig, (ax_rps, ax_lat, ax_rep) = plt.subplots(
        3, 1, sharex=True, figsize=(13, 8.5), gridspec_kw={"height_ratios": [1, 1.4, 1]})
    fig.suptitle(title, fontsize=12)
    ax_rps.stairs([c / width for c in counts], edges, color="tab:blue",
                  label=f"arrivals/s ({width:g} s buckets)", linewidth=1.5)
    if any(colds):
        ax_rps.stairs([c / width for c in colds], edges, color="tab:red",
                      label="cold starts/s", linewidth=1.2)
    ax_rps.set_ylabel("requests / s")
    ax_rps.set_ylim(bottom=0)
    ax_rps.legend(**LEGEND)

    nan = float("nan")
    for q, color, style in ((50, "black", "-"), (95, "tab:red", "--"), (100, "0.5", ":")):
        vals = []
        for lat in per_bucket:
            if lat:
                lat.sort()
                vals.append(lat[max(0, math.ceil(q / 100 * len(lat)) - 1)])
            else:
                vals.append(nan)
        label = "max" if q == 100 else f"p{q}"
        ax_lat.stairs(vals, edges, color=color, linestyle=style, linewidth=1.3,
                      label=f"{label} per bucket", baseline=None)
    finite = [x for b in per_bucket for x in b if x > 0]
    if finite and max(finite) / max(min(finite), 0.01) > 30:
        ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.legend(**LEGEND)

    xs, ys = _step_series(r.ready_series, span)
    ax_rep.plot(xs, ys, drawstyle="steps-post", color="tab:blue", linewidth=2, label="ready")
    xd, yd = _step_series(r.desired_series, span)
    ax_rep.plot(xd, yd, drawstyle="steps-post", color="tab:purple", linestyle="--",
                linewidth=1.5, label="desired")
    xp, yp = _step_series(r.pods_series, span)
    ax_rep.plot(xp, yp, drawstyle="steps-post", color="tab:green", linewidth=1,
                alpha=0.7, label="pods (any phase)")
    start = None
    for t, on in [*r.panic_series, (span, False)]:
        if on and start is None:
            start = t
        elif not on and start is not None:
            ax_rep.axvspan(start, t, color="tab:red", alpha=0.08, linewidth=0)
            start = None
    if any(on for _, on in r.panic_series):
        ax_rep.plot([], [], color="tab:red", alpha=0.3, linewidth=6, label="panic mode")
    ax_rep.set_ylim(-0.2, max([*ys, *yd, *yp, 1.0]) + 0.8)
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rep.set_ylabel("replicas")
    ax_rep.set_xlabel("seconds since the trace's start (virtual time)")
    ax_rep.legend(**LEGEND)
    for ax in (ax_rps, ax_lat, ax_rep):
        ax.grid(True, alpha=0.25)
    ax_rep.set_xlim(0, max(span, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
