"""Run the locust scenarios and draw their reports: ``python -m loadtests`` (= ``allinone
loadtest``) ``[SCENARIO ...] [--server URL] [--short] [--report-dir DIR] [--tick S] [--
LOCUST ARGS]``.

Without ``--server`` it runs its own ``allinone serve`` (``ServerProcess``, tick 0.5 s).
Each scenario is its own ``python -m locust -f loadtests/locustfile.py`` process (locust is
never imported here: gevent's monkey-patching) capped by ``--max-seconds``; a locust alive
a minute past the cap is killed. Per scenario ``NAME.json``, ``NAME.png`` and ``NAME.log``,
then ``summary.json``. Exit 1 when any scenario failed or wrote no report.
"""

from __future__ import annotations

import argparse
import importlib.util
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
RUN_TIME_CAP = {True: 180, False: 600}  # s per scenario (set-up included), short / full


def build_parser() -> argparse.ArgumentParser:
    prog = "allinone loadtest" if Path(sys.argv[0]).name == "allinone" else "python -m loadtests"
    p = argparse.ArgumentParser(prog=prog, description="Run allinone's locust scenarios: a "
                                "JSON report and a PNG each; exit 1 when a criterion fails.",
                                epilog="Arguments after -- go to every locust command, e.g. "
                                f"`{prog} --short -- --max-p95-ms 2000`.")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="default all (with "
                   f"--short all but the slow ones): {', '.join(SCENARIOS)}")
    p.add_argument("--server", metavar="URL", help="a running server (default: start one)")
    p.add_argument("--short", action="store_true", help="the short (CI) form")
    p.add_argument("--report-dir", type=Path, default=HERE / "reports", metavar="DIR",
                   help="where the JSON, PNG and logs go (default %(default)s)")
    p.add_argument("--tick", type=float, metavar="S", help="the server's autoscaler tick "
                   "(default 0.5 for the server started here, 2 with --server)")
    return p


def default_scenarios(short: bool) -> list[str]:
    return [n for n, sc in SCENARIOS.items() if not (short and sc.slow)]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and the ones after ``--`` for locust."""
    i = argv.index("--") if "--" in argv else len(argv)
    return argv[:i], argv[i + 1:]


def locust_command(name: str, url: str, report: Path, tick: float, short: bool,
                   extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--scenario",
            name, "--headless", "--host", url, "--only-summary", "--report", str(report),
            "--tick", f"{tick:g}", "--max-seconds", str(RUN_TIME_CAP[short]),
            *(["--short"] if short else []), *extra]


def run_scenario(name: str, url: str, out: Path, tick: float, short: bool,
                 extra: list[str]) -> dict[str, Any]:
    """One locust subprocess; its outcome with its report's verdict (or why none)."""
    report_path, log_path = out / f"{name}.json", out / f"{name}.log"
    report_path.unlink(missing_ok=True)
    cmd, cap = locust_command(name, url, report_path, tick, short, extra), RUN_TIME_CAP[short]
    print(f"--- {name}: {' '.join(cmd[1:])}", flush=True)
    t, problem = time.monotonic(), ""
    with open(log_path, "wb") as log:
        try:  # run() kills locust on the time-out and on Ctrl-C (then re-raises)
            code = subprocess.run(cmd, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                  timeout=cap + 60, check=False).returncode
        except subprocess.TimeoutExpired:  # --max-seconds did not end it: locust hung
            code, problem = -9, f"killed {cap + 60} s in: locust hung"
    res: dict[str, Any] = {"scenario": name, "exit_code": code, "report": str(report_path),
                           "seconds": round(time.monotonic() - t, 1), "log": str(log_path)}
    try:
        report = load_report(report_path)
    except (OSError, ValueError) as exc:
        return {**res, "passed": False, "problem": f"{problem} no report ({exc}); see {log_path}"}
    if not problem and code != 0 and report["passed"]:
        problem = f"locust exited {code} although the criteria passed; see {log_path}"
    res.update(passed=report["passed"] and code == 0 and not problem, problem=problem,
               headline=report["figures"].get("headline", ""), errors=report["errors"],
               failed_criteria=[c["detail"] for c in report["criteria"] if not c["passed"]])
    try:
        from loadtests.plot import render
        res["png"] = str(render(report, out / f"{name}.png"))
    except Exception as exc:  # a broken picture fails the run, never silently
        res.update(passed=False, problem=f"drawing the PNG failed: {type(exc).__name__}: {exc}")
    print(f"    {'PASS' if res['passed'] else 'FAIL'} in {res['seconds']:.0f} s: "
          f"{res['headline'] or problem}", flush=True)
    if not res["passed"]:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        print(f"    last lines of {log_path}:", *tail, sep="\n", flush=True)
    return res


def print_summary(results: list[dict[str, Any]], out: Path, total: float) -> None:
    print(f"\n{'scenario':<15} {'result':<7} {'time':>6}  figures")
    for r in results:
        print(f"{r['scenario']:<15} {'PASS' if r['passed'] else 'FAIL':<7} "
              f"{r['seconds']:>5.0f}s  {r.get('headline', '')}")
        for kind, key in (("FAIL", "failed_criteria"), ("ERROR", "errors")):
            for line in r.get(key, []):
                print(f"{'':<31}{kind}: {line}")
        if r.get("problem"):
            print(f"{'':<31}PROBLEM: {r['problem']}")
    print(f"\nreports in {out} (JSON, PNG and locust's log per scenario); total {total:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ours, extra = split_argv(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(ours)
    names = args.scenarios or default_scenarios(args.short)
    if unknown := [n for n in names if n not in SCENARIOS]:
        print(f"error: unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}",
              file=sys.stderr)
        return 2
    if not all(importlib.util.find_spec(m) for m in ("locust", "matplotlib")):
        print("error: locust and matplotlib are needed: pip install -e '.[load]'",
              file=sys.stderr)
        return 2
    out: Path = args.report_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, results = time.monotonic(), []
    url, tick = (args.server or "").rstrip("/"), args.tick or 2.0
    from allinone.testing import ServerProcess
    with tempfile.TemporaryDirectory(prefix="allinone-loadtest-") as tmp:
        server = None if args.server else ServerProcess(Path(tmp) / "state")
        try:
            if server is not None:
                print(f"starting allinone serve (state in {server.state_dir})", flush=True)
                server.start()
                url, tick = server.url, args.tick or server.tick
            results = [run_scenario(name, url, out, tick, args.short, extra) for name in names]
        except AssertionError as exc:  # ServerProcess.start: it never answered
            print(f"error: the server did not start: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                server.stop()
                server.cleanup_containers()
                shutil.copy(server.log_path, out / "server.log")
    total, passed = time.monotonic() - started, bool(results) and all(r["passed"] for r in results)
    (out / "summary.json").write_text(json.dumps(
        {"server": url, "tick_seconds": tick, "short": args.short, "seconds": round(total, 1),
         "passed": passed, "scenarios": results}, indent=1) + "\n")
    print_summary(results, out, total)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
