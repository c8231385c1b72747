"""Mutation testing of the pure cores: run mutmut, fail when a file's kill rate is low.

The cores, their unit tests and their floors are data, in ``cores.toml`` beside this
file. This script copies the checkout's sources and tests into a work directory
(``.mutation/`` by default, git-ignored), writes mutmut's ``[tool.mutmut]`` section
there from that table, runs ``mutmut run`` with one worker per core of the machine, and
then reads mutmut's per-file results (``mutants/PATH.meta``).

Kill rate = (killed + timed out + caught by the type check) / (all mutants - skipped).
A mutant with no test reaching it counts as a survivor. The script prints every
file's rate and surviving mutant names and exits 1 when a file is under its floor or
has no results at all (a core that silently stopped being mutated would otherwise pass).

Each core's line records the ``fingerprint`` (sha256 over the core and its test files)
of the code its floor was measured on. A mutation run is a function of exactly those
files, so a core whose fingerprint still matches is reported as measured and not run
again: CI pays only for the cores a change touched (all six cores take 15-25 minutes on
two cores; one takes a few). A change to a core or to its tests changes the fingerprint
and the core runs; when it passes, the script prints the new fingerprint to record.

    python tests/mutation/run.py            # what tox -e mutation runs
    python tests/mutation/run.py --all      # every core, changed or not
    python tests/mutation/run.py --no-run   # only re-read the last run's results
    python tests/mutation/run.py --only allinone/controller/planning.py   # one core
    cd .mutation && mutmut show NAME        # the diff of one surviving mutant
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORES = Path(__file__).resolve().with_name("cores.toml")
# What the unit tests of the cores read besides the package and the tests.
COPY = ["allinone", "tests", "fixtures", "imagedata", "loadtests"]

KILLED = {1, 3, 36, 37, 24, -24, 152, 255}  # killed, timeout, caught by type check
SKIPPED = {34}


@dataclass(frozen=True)
class Core:
    path: str
    tests: tuple[str, ...]
    floor: float
    fingerprint: str | None = None  # of the files the floor was measured on


def fingerprint(core: Core, root: Path = ROOT) -> str:
    """sha256 over the core's and its tests' bytes, each with its path."""
    h = hashlib.sha256()
    for rel in (core.path, *sorted(core.tests)):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stale(cores: list[Core], root: Path = ROOT) -> list[Core]:
    """The cores whose code or tests changed since their floor was measured."""
    return [c for c in cores if c.fingerprint != fingerprint(c, root)]


@dataclass(frozen=True)
class Result:
    killed: int
    total: int
    survivors: tuple[str, ...]

    @property
    def rate(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 0.0


def load_cores(path: Path = CORES) -> list[Core]:
    data = tomllib.loads(path.read_text())
    return [Core(c["path"], tuple(c["tests"]), float(c["floor"]), c.get("fingerprint"))
            for c in data["cores"]]


def mutmut_config(cores: list[Core]) -> str:
    tests = sorted({t for c in cores for t in c.tests})
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["allinone"]',
        f"also_copy = {json.dumps([n for n in COPY if n not in ('allinone', 'tests')])}",
        f"only_mutate = {json.dumps([c.path for c in cores])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
        "",
    ]
    return "\n".join(lines)


def prepare(work: Path, cores: list[Core]) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "reports")
    for name in COPY:
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(text + mutmut_config(cores))


def read_results(work: Path, core: Core) -> Result | None:
    meta = work / "mutants" / (core.path + ".meta")
    if not meta.exists():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    counted = {k: v for k, v in codes.items() if v not in SKIPPED}
    killed = sum(1 for v in counted.values() if v in KILLED)
    survivors = tuple(sorted(k for k, v in counted.items() if v not in KILLED))
    return Result(killed, len(counted), survivors)


def check(work: Path, cores: list[Core]) -> bool:
    ok = True
    print(f"{'file':40} {'killed':>7} {'total':>6} {'rate':>7} {'floor':>6}")
    for core in cores:
        res = read_results(work, core)
        if res is None:
            print(f"{core.path:40} no mutmut results: was it mutated at all?")
            ok = False
            continue
        verdict = "ok" if res.rate >= core.floor else "UNDER FLOOR"
        ok &= res.rate >= core.floor
        print(f"{core.path:40} {res.killed:7} {res.total:6} {res.rate:6.1f}% {core.floor:5.1f}%"
              f"  {verdict}")
        for name in res.survivors:
            print(f"    survived: {name}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".mutation")
    ap.add_argument("--no-run", action="store_true", help="only read the last results")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", action="append", metavar="PATH",
                    help="mutate and check only this core (repeatable), e.g. after changing it")
    ap.add_argument("--all", action="store_true",
                    help="run every core, also those unchanged since their floor was measured")
    args = ap.parse_args(argv)
    cores = load_cores()
    if args.only:
        unknown = set(args.only) - {c.path for c in cores}
        if unknown:
            ap.error(f"not in {CORES.name}: {', '.join(sorted(unknown))}")
        cores = [c for c in cores if c.path in args.only]
    elif not args.all and not args.no_run:
        changed = stale(cores)
        for core in cores:
            if core not in changed:
                print(f"{core.path:40} unchanged since its floor {core.floor:.1f}% was measured "
                      f"(fingerprint {core.fingerprint}): not run again")
        cores = changed
        if not cores:
            print("mutation: no core or core test changed; nothing to run")
            return 0
    if not args.no_run:
        prepare(args.work, cores)
        cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        log = args.work / "mutmut.log"
        print(f"mutation: {' '.join(cmd[1:])} in {args.work} (output in {log})", flush=True)
        with log.open("wb") as out:
            done = subprocess.run(cmd, cwd=args.work, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            # Its spinner redraws one line; the end of the log says why it stopped.
            print(log.read_text(errors="replace")[-3000:])
            print(f"mutation: mutmut failed (exit {done.returncode}); see {log}")
            return 1
        # mutmut's own exit code says nothing about the floors; the table below does.
    ok = check(args.work, cores)
    if ok and not args.no_run:
        for core in cores:
            if core.fingerprint != fingerprint(core):
                print(f"record in {CORES.name}: {core.path} fingerprint = "
                      f"\"{fingerprint(core)}\"")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
