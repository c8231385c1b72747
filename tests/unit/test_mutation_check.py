"""The mutation checker (tests/mutation/run.py): kill rates from mutmut's results, the
floor check, and the cores table it reads."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.mutation.run import (
    CORES,
    ROOT,
    Core,
    check,
    fingerprint,
    load_cores,
    mutmut_config,
    read_results,
    stale,
)


def write_meta(work: Path, path: str, codes: dict[str, int | None]) -> None:
    meta = work / "mutants" / (path + ".meta")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))


def test_rate_counts_killed_timeouts_and_type_check_skips_skipped(tmp_path: Path) -> None:
    # 1 killed, 36 timeout, 37 caught by the type check; 0 survived, 33 no tests,
    # None not checked; 34 skipped is left out of the total.
    codes = {"a": 1, "b": 36, "c": 37, "d": 0, "e": 33, "f": None, "g": 34}
    write_meta(tmp_path, "pkg/x.py", codes)
    res = read_results(tmp_path, Core("pkg/x.py", (), 0.0))
    assert res is not None
    assert (res.killed, res.total) == (3, 6)
    assert res.rate == pytest.approx(50.0)
    assert res.survivors == ("d", "e", "f")


def test_under_the_floor_fails_and_names_the_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_meta(tmp_path, "pkg/x.py", {"a": 1, "b": 1, "c": 1, "d": 0})  # 75 %
    assert check(tmp_path, [Core("pkg/x.py", (), 75.0)])
    assert not check(tmp_path, [Core("pkg/x.py", (), 75.1)])
    out = capsys.readouterr().out
    assert "UNDER FLOOR" in out and "survived: d" in out


def test_a_core_without_results_fails(tmp_path: Path) -> None:
    assert not check(tmp_path, [Core("pkg/never_mutated.py", (), 0.0)])


def test_cores_table_names_real_files_and_tests() -> None:
    cores = load_cores(CORES)
    assert cores
    for core in cores:
        assert (ROOT / core.path).is_file(), core.path
        assert core.tests and all((ROOT / t).is_file() for t in core.tests), core
        assert 0.0 <= core.floor <= 100.0


def test_generated_config_is_the_table() -> None:
    cores = [Core("allinone/a.py", ("tests/unit/test_a.py",), 90.0),
             Core("allinone/b.py", ("tests/unit/test_a.py", "tests/unit/test_b.py"), 80.0)]
    conf = tomllib.loads(mutmut_config(cores))["tool"]["mutmut"]
    assert conf["only_mutate"] == ["allinone/a.py", "allinone/b.py"]
    assert conf["pytest_add_cli_args_test_selection"] == ["tests/unit/test_a.py",
                                                          "tests/unit/test_b.py"]


def test_a_core_runs_again_when_it_or_its_tests_change(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "pkg" / "x.py").write_text("A = 1\n")
    (tmp_path / "tests" / "test_x.py").write_text("def test(): pass\n")
    core = Core("pkg/x.py", ("tests/test_x.py",), 90.0)
    measured = Core(core.path, core.tests, core.floor, fingerprint(core, tmp_path))
    assert stale([core, measured], tmp_path) == [core]  # never measured: runs
    (tmp_path / "tests" / "test_x.py").write_text("def test(): assert True\n")
    assert stale([measured], tmp_path) == [measured]  # its tests changed
    (tmp_path / "tests" / "test_x.py").write_text("def test(): pass\n")
    assert stale([measured], tmp_path) == []
    (tmp_path / "pkg" / "x.py").write_text("A = 2\n")
    assert stale([measured], tmp_path) == [measured]  # the core changed
