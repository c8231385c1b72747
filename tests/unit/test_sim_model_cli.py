"""The runtime model file (what calibrate saves) and the `allinone simulate` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allinone.cli import main as allinone
from allinone.simulator import model as rmodel
from allinone.simulator.engine import FunctionResult
from allinone.simulator.realrun import (
    RealRunError,
    _rel,
    check_bounds,
    cold_counts,
    parallel_starts,
    pod_starts,
    replay_model,
    sim_cold_mean_ms,
)
from allinone.simulator.trace import Trace


def test_model_round_trip(tmp_path: Path) -> None:
    m = rmodel.RuntimeModel(pod_start_ms=321.5, parallel_starts=2,
                            measured={"trials": 3, "defaults": ["unpause_ms"]})
    rmodel.save(m, tmp_path / "m.json")
    back = rmodel.load(tmp_path / "m.json")
    assert back == m
    assert back.pod_start == pytest.approx(0.3215)


def test_model_missing_keys_take_defaults() -> None:
    m = rmodel.from_json({"pod_start_ms": 50})
    assert m.pod_start_ms == 50 and m.unpause_ms == rmodel.RuntimeModel().unpause_ms


@pytest.mark.parametrize(("data", "words"), [
    ([], "JSON object"),
    ({"pod_start": 1}, "unknown key"),
    ({"pod_start_ms": "fast"}, "pod_start_ms must be a number"),
    ({"unpause_ms": -1}, "unpause_ms must be >= 0"),
    ({"parallel_starts": 0}, "parallel_starts must be a whole number >= 1"),
    ({"parallel_starts": 1.5}, "parallel_starts"),
    ({"measured": 3}, "measured must be an object"),
    ({"sync_delay_ms": True}, "sync_delay_ms must be a number"),
])
def test_model_bad_input(data: object, words: str) -> None:
    with pytest.raises(rmodel.ModelError, match=words):
        rmodel.from_json(data)


def test_model_file_not_json(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("{", encoding="utf-8")
    with pytest.raises(rmodel.ModelError, match="not JSON"):
        rmodel.load(tmp_path / "m.json")


def test_validation_bounds_on_load() -> None:
    with pytest.raises(RealRunError, match="at most 900"):
        check_bounds(Trace.from_rows([("f", 0.0, 0.1), ("f", 1000.0, 0.1)]))
    with pytest.raises(RealRunError, match="second 3"):
        check_bounds(Trace.from_rows([("f", 3.5, 0.1)] * 60))
    with pytest.raises(RealRunError, match="cannot be deployed"):
        check_bounds(Trace.from_rows([("Not_A_Name", 1.0, 0.1)]))
    check_bounds(Trace.from_rows([("f", 1.0, 0.1)] * 10))


@pytest.mark.parametrize(("one", "all_", "k"), [
    (100, 400, 1), (100, 100, 4), (100, 200, 2), (100, 90, 4), (100, 1000, 1), (0, 50, 1),
])
def test_parallel_starts_from_the_probe(one: float, all_: float, k: int) -> None:
    assert parallel_starts(one, all_, 4) == k


class MetricsText:
    """The one Client method cold_counts calls."""

    def __init__(self, text: str) -> None:
        self.text = text

    def metrics(self) -> str:
        return self.text


def test_cold_counts_and_their_mean_latency_from_metrics() -> None:
    text = "\n".join([
        '# HELP allinone_cold_starts_total Requests that arrived with no ready pod',
        'allinone_cold_starts_total{function="a"} 4.0',
        'allinone_cold_starts_created{function="a"} 1.7e+09',
        'allinone_cold_start_latency_seconds_bucket{function="a",le="0.5"} 1.0',
        'allinone_cold_start_latency_seconds_sum{function="a"} 6.5',
        'allinone_cold_start_latency_seconds_count{function="a"} 4.0',
        'allinone_cold_starts_total{function="b"} 0.0',
        'allinone_latency_seconds_sum{function="a"} 99.0',
    ])
    assert cold_counts(MetricsText(text)) == {"a": (4.0, 6.5), "b": (0.0, 0.0)}  # type: ignore[arg-type]
    r = FunctionResult("a")
    for lat, cold in ((2.0, 1), (0.1, 0), (1.0, 1)):
        r.latency.append(lat)
        r.cold.append(cold)
    assert sim_cold_mean_ms(r) == 1500.0
    assert sim_cold_mean_ms(FunctionResult("b")) is None


def test_relative_error() -> None:
    assert _rel(10, 11) == pytest.approx(0.1)
    assert _rel(0, 0) == 0.0
    assert _rel(None, 3) is None


def test_generate_then_simulate_writes_summary_and_charts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    assert allinone(["simulate", "generate", "bursty", "--functions", "2", "--seconds", "600",
                     "--rate", "3", "--on", "30", "--off", "120", "-o", str(trace)]) == 0
    out = tmp_path / "out"
    assert allinone(["simulate", str(trace), "--spec",
                     '{"scaling": {"scaleToZeroGracePeriodSeconds": 10}}',
                     "--charts", "1", "-o", str(out)]) == 0
    data = json.loads((out / "summary.json").read_text())
    assert set(data["functions"]) == {"bursty-000", "bursty-001"}
    for key in ("invocations", "cold_starts", "pod_seconds", "peak_pods", "panic_seconds",
                "queueing_share"):
        assert key in data["total"]
    assert set(data["total"]["latency_ms"]) >= {"p50", "p95", "p99"}
    assert data["total"]["invocations"] == sum(
        f["invocations"] for f in data["functions"].values())
    assert data["run"]["specs"]["*"]["scaling"]["scaleToZeroGracePeriodSeconds"] == 10
    assert len(list((out / "charts").glob("*.png"))) == 1


def test_compare_mode_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    Trace.from_rows([("f", 150.0 * k, 0.1) for k in range(12)]).write_csv(trace)
    out = tmp_path / "cmp"
    assert allinone(["simulate", str(trace), "-o", str(out), "--charts", "0",
                     "--compare", 'grace5={"scaling": {"scaleToZeroGracePeriodSeconds": 5}}',
                     "--compare", 'grace300={"scaling": {"scaleToZeroGracePeriodSeconds": 300}}',
                     ]) == 0
    table = capsys.readouterr().out
    assert "grace5" in table and "grace300" in table and "pod-seconds" in table
    short = json.loads((out / "grace5" / "summary.json").read_text())["total"]
    long = json.loads((out / "grace300" / "summary.json").read_text())["total"]
    # the trade-off users tune: a longer grace buys fewer cold starts with pod-seconds
    assert long["cold_starts"] < short["cold_starts"]
    assert long["pod_seconds"] > short["pod_seconds"]
    assert (out / "comparison.txt").read_text().strip() == table.strip()


@pytest.mark.parametrize(("args", "words"), [
    (["--spec", "{"], "--spec is not JSON"),
    (["--spec", '{"scaling": {"maxScale": 0}}'], "maxScale"),
    (["--compare", "nolabel"], "LABEL=JSON"),
    (["--runtime-model", "/nonexistent.json"], "cannot read runtime model"),
    (["--charts", "some"], "--charts"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], words: str) -> None:
    trace = tmp_path / "t.csv"
    Trace.from_rows([("f", 1.0, 0.1)]).write_csv(trace)
    assert allinone(["simulate", str(trace), "-o", str(tmp_path / "o"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err


def test_bad_trace_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("function,arrival_ms,duration_ms\nf,x,1\n")
    assert allinone(["simulate", str(trace), "-o", str(tmp_path / "o")]) == 1
    assert "row 2, column 'arrival_ms'" in capsys.readouterr().err


def test_pod_starts_by_kind_over_the_trace_functions_from_metrics() -> None:
    text = "\n".join([
        'allinone_pod_start_seconds_bucket{function="a",kind="created",le="0.5"} 1.0',
        'allinone_pod_start_seconds_count{function="a",kind="created"} 2.0',
        'allinone_pod_start_seconds_sum{function="a",kind="created"} 0.9',
        'allinone_pod_start_seconds_count{function="b",kind="created"} 1.0',
        'allinone_pod_start_seconds_sum{function="b",kind="created"} 0.5',
        'allinone_pod_start_seconds_count{function="a",kind="standby"} 3.0',
        'allinone_pod_start_seconds_sum{function="a",kind="standby"} 1.2',
        'allinone_pod_start_seconds_count{function="other",kind="standby"} 9.0',
        'allinone_pod_start_seconds_sum{function="other",kind="standby"} 9.0',
    ])
    got = pod_starts(MetricsText(text), ["a", "b"])  # type: ignore[arg-type]
    assert got == {"created": (3.0, pytest.approx(1.4)), "standby": (3.0, pytest.approx(1.2))}


@pytest.mark.parametrize(("after", "pod_start", "create"), [
    # 2 created pods took 0.9 s more in all, 3 standby starts 1.2 s: 450 and 400 ms.
    ({"created": (3.0, 1.4), "standby": (3.0, 1.2)}, 450.0, 50.0),
    ({"created": (3.0, 1.4)}, 450.0, 30.0),   # no standby start: create as calibrated
    ({"standby": (3.0, 1.2)}, 430.0, 30.0),   # no created start: standby + create
    ({}, 500.0, 30.0),                        # no start at all: the model as given
])
def test_the_replay_s_own_pod_starts_replace_the_calibrated_ones(
        after: dict[str, tuple[float, float]], pod_start: float, create: float) -> None:
    model = rmodel.RuntimeModel(pod_start_ms=500.0, create_ms=30.0, parallel_starts=2)
    before = {"created": (1.0, 0.5)}
    got = replay_model(model, before, {"created": (1.0, 0.5), **after})
    assert (got.pod_start_ms, got.create_ms) == (pytest.approx(pod_start),
                                                 pytest.approx(create))
    assert got.parallel_starts == 2 and "from_replay" in got.measured


@pytest.mark.parametrize(("after", "unpause"), [
    ({"resumed": (4.0, 0.1)}, 25.0),   # 4 resumes (frozen standbys, parked pods): 25 ms
    ({}, 20.0),                        # none: the model's
])
def test_the_replay_s_resumes_replace_the_unpause_time(
        after: dict[str, tuple[float, float]], unpause: float) -> None:
    model = rmodel.RuntimeModel(unpause_ms=20.0)
    got = replay_model(model, {}, after)
    assert got.unpause_ms == pytest.approx(unpause)
