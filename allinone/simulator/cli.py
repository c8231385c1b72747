"""``allinone simulate``: run a trace in virtual time, compare specs, generate traces.

    allinone simulate TRACE [--spec JSON | --specs FILE] [--runtime-model FILE] -o DIR
    allinone simulate TRACE --compare LABEL=JSON [--compare LABEL=JSON ...] -o DIR
    allinone simulate generate SHAPE [--functions N] [--seconds S] [...] -o TRACE.csv
    allinone simulate calibrate [--server URL] -o MODEL.json
    allinone simulate --validate TRACE [--spec JSON] [--server URL] -o DIR

A spec is a Function spec as the API takes it (``{"scaling": {...}, "timeoutSeconds":
60}``), validated by the same rules, plus ``keepPausedSeconds`` (the server's
``--keep-paused``) and ``standby`` (the server's ``--standby``: ``"frozen"``, the default,
``"created"`` or ``"off"``). ``--specs FILE`` is a JSON object of function name -> spec,
with ``"*"`` for every other function. In compare mode each ``--compare`` spec is used
for every function and each run writes ``DIR/LABEL/summary.json``; the table of totals
is printed and saved as ``DIR/comparison.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.client import DEFAULT_SERVER
from allinone.simulator import generate as gen
from allinone.simulator import model as rmodel
from allinone.simulator import realrun, report
from allinone.simulator.engine import TICK_SECONDS, SimSpec, Simulation
from allinone.simulator.trace import Trace, TraceError, load


class SimError(Exception):
    pass


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimError(f"{what} is not JSON ({exc.msg} at column {exc.colno}): {text!r}") \
            from None


def _spec(data: object, what: str) -> SimSpec:
    if not isinstance(data, dict):
        raise SimError(f'{what} must be a JSON object, e.g. {{"scaling": {{"maxScale": 5}}}}')
    try:
        return SimSpec.from_user(data)
    except objects.ValidationError as exc:
        raise SimError(f"{what}: {exc}") from None


def specs_from_args(args: argparse.Namespace) -> dict[str, SimSpec]:
    specs = {"*": _spec(_json_arg(args.spec, "--spec") if args.spec else {}, "--spec")}
    if args.specs:
        try:
            data = json.loads(Path(args.specs).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SimError(f"cannot read --specs {args.specs}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SimError(f"--specs {args.specs}: not JSON ({exc.msg} at line "
                           f"{exc.lineno})") from None
        if not isinstance(data, dict):
            raise SimError(f"--specs {args.specs}: must be an object of function name -> spec")
        for name, spec in data.items():
            specs[name] = _spec(spec, f"--specs {args.specs}: {name!r}")
    return specs


def run_once(trace: Trace, specs: dict[str, SimSpec], model: rmodel.RuntimeModel,
             out: Path, *, seed: int, exact: bool, charts: int | None,
             label: str = "", tick: float = TICK_SECONDS) -> dict[str, Any]:
    sim = Simulation(trace, specs, model, seed=seed, exact_ticks=exact, tick=tick)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = sim.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    span = max(sim.now, 1e-9)
    run = {
        "trace_seconds": round(sim.now, 3),
        "functions": len(trace.functions),
        "invocations": len(trace),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "speedup_over_real_time": round(span / wall, 1) if wall > 0 else None,
        "events": sim.stats.events,
        "autoscaler_ticks": sim.stats.ticks,
        # decides made (a visited tick whose decision stood is not one; pokes are)
        "autoscaler_decisions": sum(r.decisions for r in results),
        "seed": seed,
        "runtime_model": model.to_json(),
        "specs": {k: {"scaling": dict(v.scaling), "timeoutSeconds": v.timeout,
                      "keepPausedSeconds": v.keep_paused, "standby": v.standby}
                  for k, v in specs.items()},
    }
    data = report.summary(results, run)
    report.write_summary(data, out)
    if charts != 0:
        busiest = sorted(results, key=lambda r: -len(r.arrival))
        for r in busiest[: charts if charts is not None else len(busiest)]:
            fig = data["functions"][r.name]
            title = (f"{label + ': ' if label else ''}{r.name}: {fig['invocations']} "
                     f"invocations, {fig['cold_starts']} cold, p99 "
                     f"{fig['latency_ms']['p99']} ms, {fig['pod_seconds']:.0f} pod-s")
            report.render_function(r, span, out / "charts" / f"{r.name}.png", title)
    return data


def cmd_run(args: argparse.Namespace) -> int:
    trace = load(Path(args.trace), durations=Path(args.durations) if args.durations else None,
                 duration_ms=args.duration_ms, seed=args.seed)
    model = rmodel.load(Path(args.runtime_model)) if args.runtime_model else rmodel.RuntimeModel()
    out = Path(args.output)
    charts = None if args.charts == "all" else int(args.charts)
    if not args.compare:
        data = run_once(trace, specs_from_args(args), model, out, seed=args.seed,
                        exact=args.exact_ticks, charts=charts, tick=args.tick)
        t, r = data["total"], data["run"]
        print(f"{r['invocations']} invocations of {r['functions']} functions over "
              f"{r['trace_seconds']:.0f} s simulated in {r['wall_seconds']:.1f} s "
              f"({r['speedup_over_real_time']}x real time)")
        print(report.comparison_table([("spec", t)]))
        print(f"wrote {out / 'summary.json'}")
        return 0
    rows = []
    base = specs_from_args(args)
    for item in args.compare:
        label, sep, text = item.partition("=")
        if not sep or not label.strip():
            raise SimError(f"--compare {item!r}: write LABEL=JSON, e.g. "
                           'window6=\'{"scaling": {"stableWindowSeconds": 6}}\'')
        specs = dict(base)
        specs["*"] = _spec(_json_arg(text, f"--compare {label}"), f"--compare {label}")
        specs = {k: v for k, v in specs.items() if k == "*"}  # one spec for every function
        data = run_once(trace, specs, model, out / label, seed=args.seed,
                        exact=args.exact_ticks, charts=charts, label=label,
                        tick=args.tick)
        rows.append((label, data["total"]))
        print(f"{label}: simulated in {data['run']['wall_seconds']:.1f} s", file=sys.stderr)
    table = report.comparison_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.txt").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


def cmd_generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="allinone simulate generate",
                                description=gen.__doc__.split("\n\n")[0] if gen.__doc__ else "")
    p.add_argument("shape", choices=[*gen.SHAPES, "day-mix"],
                   help="one shape for every function, or day-mix (100 functions, 24 h, "
                        "about one million invocations)")
    p.add_argument("--functions", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=1.0, help="requests/s (steady, diurnal "
                   "mean, bursty while on, spiky base)")
    p.add_argument("--amplitude", type=float, default=0.8)
    p.add_argument("--on", type=float, default=60.0)
    p.add_argument("--off", type=float, default=240.0)
    p.add_argument("--spike-every", type=float, default=600.0)
    p.add_argument("--spike-size", type=int, default=50)
    p.add_argument("--per-day", type=float, default=24.0)
    p.add_argument("--duration-ms", type=float, default=100.0)
    p.add_argument("--sigma", type=float, default=0.0)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    try:
        if a.shape == "day-mix":
            trace = gen.day_mix(seed=a.seed, seconds=a.seconds if "--seconds" in argv
                                else gen.DAY)
        else:
            trace = gen.uniform(a.shape, a.functions, a.seconds, a.seed, rate=a.rate,
                                amplitude=a.amplitude, on=a.on, off=a.off,
                                spike_every=a.spike_every, spike_size=a.spike_size,
                                per_day=a.per_day, duration_ms=a.duration_ms, sigma=a.sigma)
    except ValueError as exc:
        raise SimError(str(exc)) from None
    trace.write_csv(Path(a.output))
    print(f"wrote {len(trace)} invocations of {len(trace.functions)} functions to {a.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="allinone simulate",
        description="Replay a trace through allinone's KPA, pod choice and replica planning "
                    "in virtual time. Also: `allinone simulate generate --help`, "
                    "`allinone simulate calibrate --help`.")
    p.add_argument("trace", help="CSV (function,arrival_ms,duration_ms) or an Azure "
                   "Functions 2019 invocations file (HashFunction, 1..1440)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR")
    p.add_argument("--spec", help="Function spec JSON for every function")
    p.add_argument("--specs", metavar="FILE", help='JSON: function name -> spec, "*" default')
    p.add_argument("--runtime-model", metavar="FILE", help="from `allinone simulate calibrate`")
    p.add_argument("--durations", metavar="FILE", help="Azure durations percentiles file")
    p.add_argument("--duration-ms", type=float, help="fixed duration for Azure counts")
    p.add_argument("--seed", type=int, default=0, help="spreading and pod choice seed")
    p.add_argument("--compare", action="append", metavar="LABEL=JSON",
                   help="run once per spec and print a side-by-side table")
    p.add_argument("--charts", default="20", metavar="N|all",
                   help="charts for the N busiest functions (default 20; 0 for none)")
    p.add_argument("--exact-ticks", action="store_true",
                   help="tick idle functions at zero too (slower; same results)")
    p.add_argument("--tick", type=float, default=TICK_SECONDS,
                   help="autoscaler tick in seconds (the server's --tick; default %(default)s)")
    p.add_argument("--validate", action="store_true",
                   help="replay TRACE against the real server (--server) and compare")
    p.add_argument("--server", default=os.environ.get("ALLINONE_SERVER", DEFAULT_SERVER))
    p.add_argument("--token", default=os.environ.get("ALLINONE_TOKEN"))
    return p


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["generate"]:
            return cmd_generate(argv[1:])
        if argv[:1] == ["calibrate"]:
            return realrun.main_calibrate(argv[1:])
        args = build_parser().parse_args(argv)
        if args.charts != "all" and not args.charts.isdigit():
            raise SimError(f"--charts takes a number or 'all', got {args.charts!r}")
        if args.validate:
            return realrun.main_validate(args)
        return cmd_run(args)
    except (SimError, TraceError, rmodel.ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
