"""One PNG per scenario report, four panels on one time axis (seconds since set-up):
answers per second (failures red); every request's latency as a dot per request name
(failed: red x) with p50/p95 per second; ready (solid) and desired (dashed) replicas
with panic mode shaded, the criterion's deadline and the KPA's expected count (with
several functions each one's ready pods); each function's CPU and memory. Events are
dotted lines through all panels, the criteria are written underneath. Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

MAX_DOTS = 20000  # beyond this many requests the dots are noise; lines only
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive")
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "borderaxespad": 0}


def shade(ax: Axes, spans: Sequence[tuple[float, float]], color: str, label: str) -> None:
    """Shade each ``(from, to)`` of ``spans``, with one legend entry for all of them."""
    for t0, t1 in spans:
        ax.axvspan(t0, t1, color=color, alpha=0.1, linewidth=0)
    if spans:
        ax.plot([], [], color=color, alpha=0.3, linewidth=6, label=label)


def steps(ax: Axes, rows: Sequence[Any], x: Any, y: Any, **style: Any) -> list[float]:
    """A step line of ``y(row)`` over ``x(row)`` for the rows where it is known; its ys."""
    have = [(float(x(r)), float(y(r))) for r in rows if y(r) is not None]
    ax.plot([t for t, _ in have], [v for _, v in have], drawstyle="steps-post", **style)
    return [v for _, v in have]


def render(report: Mapping[str, Any], path: Path) -> Path:
    """Draw ``report`` (a dict as :func:`loadtests.report.load_report` returns) to ``path``."""
    tl, samples, records, events, criteria, errors = (report.get(k) or [] for k in (
        "timeline", "samples", "records", "events", "criteria", "errors"))
    figures = report.get("figures") or {}
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(13, 10.5),
                             gridspec_kw={"height_ratios": [1, 1.4, 1, 1]})
    ax_rps, ax_lat, ax_rep, ax_use = axes
    fig.suptitle(f"{report.get('scenario')}: {'PASSED' if report.get('passed') else 'FAILED'}"
                 f"   (function {report.get('function')}, autoscaler tick "
                 f"{report.get('tick_seconds')} s{', short form' if report.get('short') else ''})",
                 color="black" if report.get("passed") else "darkred", fontsize=12)

    # 1. throughput, per 1 s bucket drawn over its whole second
    edges = [row["t"] for row in tl] + ([tl[-1]["t"] + 1.0] if tl else [])
    for key, color, label in (("rps", "tab:blue", "answers/s"), ("fail_rps", "tab:red",
                                                                 "failures/s")):
        if key == "rps" or any(row[key] for row in tl):
            ax_rps.stairs([row[key] for row in tl], edges, color=color, label=label,
                          linewidth=1.5)
    ax_rps.set_ylabel("requests / s")

    # 2. latency: every request as a dot per request name, bucket p50/p95 where dense
    if len(records) <= MAX_DOTS:
        names = list(dict.fromkeys(str(r[3]) for r in records))
        for i, name in enumerate(names):
            if not (ok := [r for r in records if r[2] and str(r[3]) == name]):
                continue
            size = 18 if len(ok) < 100 else 8 if len(ok) < 1000 else 4
            ax_lat.scatter([r[0] + r[1] / 1000 for r in ok], [r[1] for r in ok], s=size,
                           color=COLORS[i % len(COLORS)], linewidths=0,
                           alpha=0.35 if len(ok) > 500 else 0.85, label=name)
        if bad := [r for r in records if not r[2]]:
            ax_lat.scatter([r[0] + r[1] / 1000 for r in bad], [r[1] for r in bad], s=22,
                           color="tab:red", marker="x", label="failed")
    if any(row["rps"] >= 5 for row in tl):
        for key, color, style in (("p50_ms", "black", "-"), ("p95_ms", "tab:red", "--")):
            vals = [row[key] if row["rps"] >= 5 and row[key] is not None else float("nan")
                    for row in tl]
            ax_lat.stairs(vals, edges, color=color, linewidth=1.3, linestyle=style,
                          label=f"{key[:3]} per second", baseline=None)
    lat = [r[1] for r in records if r[1] > 0]
    ax_lat.set_yscale("log" if lat and max(lat) / max(min(lat), 0.01) > 30 else "linear")
    ax_lat.set_ylabel("latency (ms)")

    # 3. replicas; a scenario of several functions (imagepipe_load): each one's ready pods
    by_fn, usage = figures.get("replicas_by_function") or {}, figures.get("usage_by_function") or {}
    fn_color = {fn: COLORS[(i + 1) % len(COLORS)] for i, fn in enumerate(sorted({*by_fn, *usage}))}
    shown = steps(ax_rep, samples, lambda s: s["t"], lambda s: s.get("ready"), linewidth=2,
                  color="tab:blue", label="ready")
    shown += steps(ax_rep, samples, lambda s: s["t"], lambda s: s.get("desired"),
                   color="tab:purple", linestyle="--", linewidth=1.5, label="desired")
    for fn, rows in sorted(by_fn.items()):
        shown += steps(ax_rep, rows, lambda r: r[0], lambda r: r[1], color=fn_color[fn],
                       linewidth=1.3, label=f"{fn} ready")
    ts = [float(s["t"]) for s in samples] + [float(samples[-1]["t"]) + 0.5] if samples else []
    shade(ax_rep, [(ts[i], ts[i + 1]) for i, s in enumerate(samples) if s.get("panic")],
          "tab:red", "panic mode")
    if (expected := figures.get("expected_replicas")) is not None:
        ax_rep.axhline(expected, color="0.4", linestyle=":", linewidth=1,
                       label=f"KPA expected ({expected})")
    if deadline := figures.get("deadline"):
        shade(ax_rep, [(deadline["from"], deadline["to"])], "tab:green",
              deadline.get("label", "deadline"))
    ax_rep.set_ylim(-0.2, max([*shown, float(expected or 0), 1.0]) + 0.8)
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rep.set_ylabel("replicas")

    # 4. CPU (solid) and memory (dashed, right axis) per function
    ax_mem = ax_use.twinx()
    for fn, rows in sorted(usage.items()):
        ax_use.plot([r[0] for r in rows], [r[1] for r in rows], color=fn_color[fn],
                    linewidth=1.3, label=f"{fn} CPU")
        ax_mem.plot([r[0] for r in rows], [r[2] / 2**20 for r in rows], color=fn_color[fn],
                    linewidth=1, linestyle="--", label=f"{fn} memory")
    ax_use.set_ylabel("CPU (% of a core)")
    ax_mem.set_ylabel("memory (MiB)")
    ax_mem.set_ylim(bottom=0)
    ax_use.set_xlabel("seconds since set-up finished")
    if handles := [h for ax in (ax_use, ax_mem) for h in ax.get_legend_handles_labels()[0]]:
        ax_use.legend(handles=handles, **{**LEGEND, "bbox_to_anchor": (1.06, 1.0)})

    # events through all panels, labelled on the top one; legends beside the others
    for ax in axes:
        for ev in events:
            ax.axvline(ev["t"], color="0.5", linestyle=":", linewidth=0.9)
        ax.grid(True, alpha=0.25)
        if ax is not ax_use and ax.get_legend_handles_labels()[0]:
            ax.legend(**LEGEND)
        if ax in (ax_rps, ax_use) or (ax is ax_lat and ax.get_yscale() == "linear"):
            ax.set_ylim(bottom=0)
    for ev in events:
        ax_rps.annotate(ev["label"], xy=(ev["t"], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -2), textcoords="offset points", rotation=90,
                        fontsize=6.5, va="top", ha="left", color="0.3")
    ax_rep.set_xlim(0, max([float(report.get("duration_s") or 0), *ts, 1.0]))

    lines = [str(figures["headline"])] if figures.get("headline") else []
    lines += [f"{'PASS' if c['passed'] else 'FAIL'}  {c['detail']}" for c in criteria]
    lines += [f"ERROR  {e}" for e in errors]
    fig.text(0.01, 0.005, "\n".join(lines) or "no criteria evaluated", fontsize=8,
             va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, 0.02 + 0.018 * max(1, len(lines)), 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
