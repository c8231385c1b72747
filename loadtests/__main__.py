"""Run the locust scenarios and draw their reports: ``python -m loadtests``.

    python -m loadtests [SCENARIO ...] [--server URL] [--short] [--report-dir DIR]
                        [--tick S] [-- LOCUST ARGS...]
    allinone loadtest   (the same arguments)

Without ``--server`` it starts its own ``allinone serve`` (``ServerProcess``, autoscaler
tick 0.5 s) and at the end stops it, removes its containers and keeps its log. Each
scenario is its own ``python -m locust -f loadtests/locustfile.py --scenario NAME ...``
process, as a user would run it, with ``--max-seconds`` as a safety cap (locust's
``--run-time`` does not apply to shape-driven tests); a locust still alive a minute
after its cap is killed. Per scenario: ``NAME.json``, ``NAME.png``, ``NAME.log``; then
a summary table and ``summary.json``. Exit 1 when any scenario failed or wrote no
report. Arguments after ``--`` go to every locust command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests.report import load_report
from loadtests.scenarios import SCENARIOS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_REPORT_DIR = HERE / "reports"
# Safety caps on one scenario's run in seconds (set-up included: the first build on a
# fresh registry pushes the base image, ~10-15 s here). The shapes end well before them.
RUN_TIME_CAP = {True: 180, False: 600}


def build_parser() -> argparse.ArgumentParser:
    prog = "allinone loadtest" if Path(sys.argv[0]).name == "allinone" else "python -m loadtests"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run allinone's locust scenarios, write a JSON report and a PNG per "
                    "scenario, exit 1 when any scenario's criteria fail.",
        epilog="Arguments after -- go to every locust command, e.g. "
               f"`{prog} --short -- --max-p95-ms 2000`; the scenarios' options are in "
               "loadtests/README.md.")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"which to run (default all; with --short all but the slow "
                        f"ones): {', '.join(SCENARIOS)}")
    p.add_argument("--server", metavar="URL",
                   help="a running allinone server (default: start one for the run)")
    p.add_argument("--short", action="store_true", help="the short (CI) form of each scenario")
    p.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR, metavar="DIR",
                   help="where the JSON, PNG and logs go (default %(default)s)")
    p.add_argument("--tick", type=float, default=None, metavar="S",
                   help="the server's autoscaler tick (default 0.5 for the server started "
                        "here, 2 with --server)")
    return p


def default_scenarios(short: bool) -> list[str]:
    """Every scenario; the short (CI) form leaves out the slow ones (``Scenario.slow``)."""
    return [n for n, sc in SCENARIOS.items() if not (short and sc.slow)]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and the ones after ``--`` for locust."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def locust_command(name: str, url: str, report: Path, tick: float, short: bool,
                   extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--scenario",
           name, "--headless", "--host", url, "--only-summary", "--report", str(report),
           "--tick", f"{tick:g}",           "--max-seconds", str(RUN_TIME_CAP[short])]
    if short:
        cmd.append("--short")
    return cmd + extra


def run_scenario(name: str, url: str, out: Path, tick: float, short: bool,
                 extra: list[str]) -> dict[str, Any]:
    """Run one locustfile as a subprocess; the outcome with its report (or why none)."""
    report_path, log_path = out / f"{name}.json", out / f"{name}.log"
    report_path.unlink(missing_ok=True)
    cmd = locust_command(name, url, report_path, tick, short, extra)
    print(f"--- {name}: {' '.join(cmd[1:])}", flush=True)
    t = time.monotonic()
    timed_out = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code: int | None = proc.wait(RUN_TIME_CAP[short] + 60)
        except subprocess.TimeoutExpired:
            # --max-seconds did not end it (locust hung): the last resort, no report.
            timed_out = True
            proc.kill()
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(30)
            raise
    took = time.monotonic() - t
    result: dict[str, Any] = {"scenario": name, "exit_code": code, "seconds": round(took, 1),
                              "report": str(report_path), "log": str(log_path)}
    try:
        report = load_report(report_path)
    except (OSError, ValueError) as exc:
        why = "stopped at the time cap, " if timed_out else ""
        result.update(passed=False, problem=f"{why}no report ({exc}); see {log_path}")
        return result
    result["passed"] = bool(report["passed"]) and code == 0
    if timed_out:
        result["passed"] = False
        result["problem"] = f"killed after {RUN_TIME_CAP[short] + 60} s: locust hung"
    elif code != 0 and report["passed"]:
        result["problem"] = f"locust exited {code} although the criteria passed; see {log_path}"
    result["headline"] = report["figures"].get("headline", "")
    result["failed_criteria"] = [c["detail"] for c in report["criteria"] if not c["passed"]]
    result["errors"] = report["errors"]
    try:
        from loadtests.plot import render
        result["png"] = str(render(report, out / f"{name}.png"))
    except Exception as exc:  # a broken picture is a failure of the run, not silence
        result["passed"] = False
        result["problem"] = f"drawing the PNG failed: {type(exc).__name__}: {exc}"
    return result


def print_summary(results: list[dict[str, Any]], out: Path, total: float) -> None:
    print()
    print(f"{'scenario':<15} {'result':<7} {'time':>6}  figures")
    for r in results:
        print(f"{r['scenario']:<15} {'PASS' if r['passed'] else 'FAIL':<7} "
              f"{r['seconds']:>5.0f}s  {r.get('headline', '')}")
        for detail in r.get("failed_criteria", []):
            print(f"{'':<31}FAIL: {detail}")
        for err in r.get("errors", []):
            print(f"{'':<31}ERROR: {err}")
        if r.get("problem"):
            print(f"{'':<31}PROBLEM: {r['problem']}")
    print(f"\nreports in {out} (JSON, PNG and locust's log per scenario); "
          f"total {total:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ours, extra = split_argv(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(ours)
    names = args.scenarios or default_scenarios(args.short)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}",
              file=sys.stderr)
        return 2
    # Never import locust here: it monkey-patches the process with gevent. Only look.
    if not _has_module("locust") or not _has_module("matplotlib"):
        print("error: locust and matplotlib are needed: pip install -e '.[load]'",
              file=sys.stderr)
        return 2
    out: Path = args.report_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    server = None
    tmp: str | None = None
    if args.server:
        url, tick = args.server.rstrip("/"), args.tick if args.tick is not None else 2.0
    else:
        from allinone.testing import ServerProcess
        tmp = tempfile.mkdtemp(prefix="allinone-loadtest-")
        server = ServerProcess(Path(tmp) / "state")
        print(f"starting allinone serve (state in {server.state_dir}, tick {server.tick} s)",
              flush=True)
        try:
            server.start()
        except AssertionError as exc:
            print(f"error: the server did not start: {exc}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
            return 2
        url = server.url
        tick = args.tick if args.tick is not None else server.tick
    results: list[dict[str, Any]] = []
    try:
        for name in names:
            r = run_scenario(name, url, out, tick, args.short, extra)
            results.append(r)
            print(f"    {'PASS' if r['passed'] else 'FAIL'} in {r['seconds']:.0f} s: "
                  f"{r.get('headline') or r.get('problem', '')}", flush=True)
            if not r["passed"]:
                lines = Path(r["log"]).read_text(errors="replace").splitlines()[-25:]
                print(f"    last lines of {r['log']}:", *lines, sep="\n", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
            server.cleanup_containers()
            if server.log_path.exists():
                shutil.copy(server.log_path, out / "server.log")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - started
    (out / "summary.json").write_text(json.dumps(
        {"server": url, "tick_seconds": tick, "short": args.short, "seconds": round(total, 1),
         "passed": all(r["passed"] for r in results), "scenarios": results}, indent=1) + "\n")
    print_summary(results, out, total)
    return 0 if results and all(r["passed"] for r in results) else 1


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
