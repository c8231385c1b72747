"""One PNG per scenario report, four panels on one time axis (seconds since set-up):
answers per second (failures red); every request's latency as a dot per request name
(failed: red x) with p50/p95 per second; ready (solid) and desired (dashed) replicas
with panic mode shaded, the criterion's deadline and the KPA's expected count (with
several functions each one's ready pods); each function's CPU and memory. Events are
dotted lines through all panels, the criteria are written underneath. Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import MaxNLocator

MAX_DOTS = 20000  # beyond this many requests the dots are noise; lines only


def _steps(samples: list[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    have = [s for s in samples if s.get(key) is not None]
    return [float(s["t"]) for s in have], [float(s[key]) for s in have]


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive")
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "borderaxespad": 0}
NAN = float("nan")


def render(report: Mapping[str, Any], path: Path) -> Path:
    """Draw ``report`` (a dict as :func:`loadtests.report.load_report` returns) to ``path``."""
    tl, samples, records, events, criteria, errors = (report.get(k) or [] for k in (
        "timeline", "samples", "records", "events", "criteria", "errors"))
    figures = report.get("figures") or {}

    fig, (ax_rps, ax_lat, ax_rep, ax_use) = plt.subplots(
        4, 1, sharex=True, figsize=(13, 10.5), gridspec_kw={"height_ratios": [1, 1.4, 1, 1]})
    verdict = "PASSED" if report.get("passed") else "FAILED"
    fig.suptitle(f"{report.get('scenario')}: {verdict}   (function {report.get('function')}, "
                 f"autoscaler tick {report.get('tick_seconds')} s"
                 f"{', short form' if report.get('short') else ''})",
                 color="black" if report.get("passed") else "darkred", fontsize=12)

    # 1. throughput, per 1 s bucket drawn over its whole second
    edges = [row["t"] for row in tl] + ([tl[-1]["t"] + 1.0] if tl else [])
    ax_rps.stairs([row["rps"] for row in tl], edges, color="tab:blue", label="answers/s",
                  linewidth=1.5)
    if any(row["fail_rps"] for row in tl):
        ax_rps.stairs([row["fail_rps"] for row in tl], edges, color="tab:red",
                      label="failures/s", linewidth=1.5)
    ax_rps.set_ylabel("requests / s")
    ax_rps.set_ylim(bottom=0)
    ax_rps.legend(**LEGEND)

    # 2. latency: every request as a dot per request name, bucket p50/p95 where dense
    if records and len(records) <= MAX_DOTS:
        names = list(dict.fromkeys(str(r[3]) for r in records))
        for i, name in enumerate(names):
            ok = [r for r in records if r[2] and str(r[3]) == name]
            if ok:
                size = 18 if len(ok) < 100 else 8 if len(ok) < 1000 else 4
                ax_lat.scatter([r[0] + r[1] / 1000 for r in ok], [r[1] for r in ok], s=size,
                               color=COLORS[i % len(COLORS)], linewidths=0,
                               alpha=0.35 if len(ok) > 500 else 0.85, label=name)
        bad = [r for r in records if not r[2]]
        if bad:
            ax_lat.scatter([r[0] + r[1] / 1000 for r in bad], [r[1] for r in bad], s=22,
                           color="tab:red", marker="x", label="failed")
    dense = [row for row in tl if row["rps"] >= 5]
    if dense:
        for key, color, label in (("p50_ms", "black", "p50 per second"),
                                  ("p95_ms", "tab:red", "p95 per second")):
            vals = [row[key] if row["rps"] >= 5 and row[key] is not None else NAN
                    for row in tl]
            ax_lat.stairs(vals, edges, color=color, linewidth=1.3, label=label,
                          linestyle="-" if key == "p50_ms" else "--", baseline=None)
    lat = [r[1] for r in records if r[1] > 0]
    if lat and max(lat) / max(min(lat), 0.01) > 30:
        ax_lat.set_yscale("log")
    else:
        ax_lat.set_ylim(bottom=0)
    ax_lat.set_ylabel("latency (ms)")
    if records:
        ax_lat.legend(**LEGEND)

    # 3. replicas
    xs, ready = _steps(samples, "ready")
    ax_rep.plot(xs, ready, drawstyle="steps-post", color="tab:blue", linewidth=2,
                label="ready")
    xs_d, desired = _steps(samples, "desired")
    ax_rep.plot(xs_d, desired, drawstyle="steps-post", color="tab:purple", linestyle="--",
                linewidth=1.5, label="desired")
    # a scenario of several functions (imagepipe_load): each one's ready pods
    by_fn = figures.get("replicas_by_function") or {}
    usage = figures.get("usage_by_function") or {}
    fn_color = {fn: COLORS[(i + 1) % len(COLORS)] for i, fn in enumerate(sorted({*by_fn, *usage}))}
    for fn, rows in sorted(by_fn.items()):
        ax_rep.plot([r[0] for r in rows], [r[1] for r in rows], drawstyle="steps-post",
                    color=fn_color[fn], linewidth=1.3, label=f"{fn} ready")
        ready = [*ready, *(float(r[1]) for r in rows)]
    panic = [(s["t"], bool(s.get("panic"))) for s in samples]
    for i, (t0, on) in enumerate(panic):
        if on:
            t1 = panic[i + 1][0] if i + 1 < len(panic) else t0 + 0.5
            ax_rep.axvspan(t0, t1, color="tab:red", alpha=0.08, linewidth=0)
    if any(on for _, on in panic):
        ax_rep.plot([], [], color="tab:red", alpha=0.3, linewidth=6, label="panic mode")
    expected = figures.get("expected_replicas")
    if expected is not None:
        ax_rep.axhline(expected, color="0.4", linestyle=":", linewidth=1,
                       label=f"KPA expected ({expected})")
    deadline = figures.get("deadline")
    if deadline:
        ax_rep.axvspan(deadline["from"], deadline["to"], color="tab:green", alpha=0.10,
                       linewidth=0)
        ax_rep.plot([], [], color="tab:green", alpha=0.3, linewidth=6,
                    label=deadline.get("label", "deadline"))
    top = max([*ready, *desired, float(expected or 0), 1.0])
    ax_rep.set_ylim(-0.2, top + 0.8)
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rep.set_ylabel("replicas")
    ax_rep.legend(**LEGEND)

    # 4. CPU and memory per function
    ax_mem = ax_use.twinx()
    for fn, rows in sorted(usage.items()):
        ts = [r[0] for r in rows]
        ax_use.plot(ts, [r[1] for r in rows], color=fn_color[fn], linewidth=1.3,
                    label=f"{fn} CPU")
        ax_mem.plot(ts, [r[2] / 2**20 for r in rows], color=fn_color[fn], linewidth=1,
                    linestyle="--", label=f"{fn} memory")
    ax_use.set_ylabel("CPU (% of a core)")
    ax_mem.set_ylabel("memory (MiB)")
    ax_use.set_ylim(bottom=0)
    ax_mem.set_ylim(bottom=0)
    ax_use.set_xlabel("seconds since set-up finished")
    handles = [h for ax in (ax_use, ax_mem) for h in ax.get_legend_handles_labels()[0]]
    if handles:
        ax_use.legend(handles=handles, **{**LEGEND, "bbox_to_anchor": (1.06, 1.0)})

    # events, through all panels; labels on the top one
    for ev in events:
        for ax in (ax_rps, ax_lat, ax_rep, ax_use):
            ax.axvline(ev["t"], color="0.5", linestyle=":", linewidth=0.9)
        ax_rps.annotate(ev["label"], xy=(ev["t"], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -2), textcoords="offset points", rotation=90,
                        fontsize=6.5, va="top", ha="left", color="0.3")
    for ax in (ax_rps, ax_lat, ax_rep, ax_use):
        ax.grid(True, alpha=0.25)
    end = max([float(report.get("duration_s") or 0), *(x + 0.5 for x in xs), 1.0])
    ax_rep.set_xlim(0, end)

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
