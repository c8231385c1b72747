"""The load tests' pure helpers: statistics, the KPA's expected count, criteria, reports.

Nothing here imports locust (it monkey-patches the process with gevent) or needs a
server; one test checks that importing the runner does not pull locust in either.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from allinone import objects
from allinone.client import parse_metric
from loadtests import report as r
from loadtests import scenarios as sc
from loadtests.__main__ import SCENARIOS, default_scenarios, locust_command, split_argv

ROOT = Path(__file__).resolve().parents[2]


# -- statistics ------------------------------------------------------------------------

def test_percentile_interpolates_linearly() -> None:
    assert r.percentile([1, 2, 3, 4], 50) == 2.5
    assert r.percentile([4, 1, 3, 2], 0) == 1
    assert r.percentile([4, 1, 3, 2], 100) == 4
    assert r.percentile(range(1, 101), 95) == pytest.approx(95.05)
    assert r.percentile([7.0], 95) == 7.0
    assert r.percentile([], 50) is None


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        r.percentile([1.0], 101)


def test_summarize() -> None:
    s = r.summarize([10.0, 20.0, 30.0, 40.0])
    assert s == {"count": 4, "min": 10.0, "mean": 25.0, "p50": 25.0, "p95": 38.5,
                 "p99": 39.7, "max": 40.0}
    assert r.summarize([])["p50"] is None


def test_fmt_ms() -> None:
    assert sc.fmt_ms(None) == "-"
    assert sc.fmt_ms(1.234) == "1.2"
    assert sc.fmt_ms(123.6) == "124"


# -- the KPA's expected count ------------------------------------------------------

def test_expected_replicas_formula() -> None:
    scaling = {"target": 2, "targetUtilizationPercentage": 100, "maxScale": 6}
    assert sc.per_pod_target(scaling) == 2.0
    assert sc.expected_replicas(6, scaling) == 3  # ceil(6 / 2)
    assert sc.expected_replicas(5.9, scaling) == 3  # a closed loop is a little under N
    assert sc.expected_replicas(6.1, scaling) == 4
    assert sc.expected_replicas(100, scaling) == 6  # capped at maxScale


def test_expected_replicas_defaults_and_bounds() -> None:
    assert sc.per_pod_target({}) == 7.0  # 10 x 70 %
    assert sc.expected_replicas(40, {}) == 6  # ceil(40 / 7), the KPA docstring's example
    assert sc.expected_replicas(0, {}) == 0
    assert sc.expected_replicas(0, {"minScale": 1}) == 1
    # Float noise does not add a pod: 11 / (10 x 110 %) is 1, not 2.
    assert sc.expected_replicas(11, {"target": 10, "targetUtilizationPercentage": 100}) == 2
    assert sc.expected_replicas(7, {}) == 1


# -- criteria --------------------------------------------------------------------------

def rec(t: float, ms: float, ok: bool = True, name: str = "invoke",
        error: str | None = None) -> list[object]:
    return [t, ms, ok, name, error]


def test_no_failures() -> None:
    good = sc.no_failures([rec(0, 1), rec(1, 2)])
    assert good.passed and good.measured == 0 and "all 2 requests" in good.detail
    bad = sc.no_failures([rec(0, 1), rec(1, 2, False, error="HTTP 503: overloaded")])
    assert not bad.passed and bad.measured == 1 and "HTTP 503" in bad.detail
    none = sc.no_failures([])
    assert not none.passed  # nothing sent proves nothing


def test_at_most() -> None:
    assert r.at_most("x", 3.8, 4.1, "s", "zero").passed
    assert not r.at_most("x", 4.2, 4.1, "s", "zero").passed
    assert not r.at_most("x", None, 4.1, "s", "zero").passed


# -- time series and stats ---------------------------------------------------------

def test_timeline_buckets_by_answer_time() -> None:
    # Starts at 0.9 s and takes 200 ms: answered at 1.1 s, so it counts in second 1.
    rows = r.timeline([rec(0.1, 100), rec(0.2, 300), rec(0.9, 200, False)], end=3.0)
    assert [row["t"] for row in rows] == [0.0, 1.0, 2.0]
    assert rows[0]["rps"] == 2 and rows[0]["fail_rps"] == 0
    assert rows[0]["p50_ms"] == 200.0
    assert rows[1]["rps"] == 1 and rows[1]["fail_rps"] == 1
    assert rows[2]["rps"] == 0 and rows[2]["p50_ms"] is None


def test_timeline_empty() -> None:
    assert r.timeline([]) == [{"t": 0.0, "rps": 0.0, "fail_rps": 0.0, "p50_ms": None,
                               "p95_ms": None}]


def test_request_stats_and_failures() -> None:
    recs = [rec(0, 100, name="cold start"), rec(1, 2, name="warm"),
            rec(2, 3, False, "warm", "HTTP 500: boom"), rec(3, 3, False, "warm", "HTTP 500: boom")]
    st = r.request_stats(recs)
    assert st["total"] == 4 and st["failures"] == 2
    assert st["by_name"]["cold start"]["count"] == 1
    assert st["by_name"]["warm"]["failures"] == 2
    assert r.failure_summary(recs) == [{"name": "warm", "error": "HTTP 500: boom",
                                        "occurrences": 2}]


def test_parse_metric() -> None:
    text = ('# TYPE allinone_cold_start_latency_seconds histogram\n'
            'allinone_cold_start_latency_seconds_sum{function="a"} 0.372\n'
            'allinone_cold_start_latency_seconds_sum{function="ab"} 9\n'
            'allinone_cold_starts_total{function="ab"} 2.0\n')
    assert parse_metric(text, "allinone_cold_start_latency_seconds_sum", "a") == 0.372
    assert parse_metric(text, "allinone_cold_start_latency_seconds_sum", "ab") == 9.0
    assert parse_metric(text, "allinone_cold_starts_total", "a") is None


# -- the report ------------------------------------------------------------------------

def test_report_shape_and_round_trip(tmp_path: Path) -> None:
    rep = r.Report("scale_up", short=True, server="http://127.0.0.1:1", function="lt-x",
                   tick_seconds=0.5, duration_s=2.0)
    rep.records = [rec(0.1, 200), rec(0.5, 210)]
    rep.samples = [{"t": 0.0, "ready": 1, "desired": 1}]
    rep.criteria = [sc.no_failures(rep.records)]
    data = rep.as_dict()
    assert tuple(data) == r.REPORT_KEYS
    assert data["passed"] is True and data["version"] == r.REPORT_VERSION
    assert data["criteria"][0] == {"name": "no failed request", "passed": True,
                                   "measured": 0, "limit": 0,
                                   "detail": "all 2 requests succeeded"}
    assert data["requests"]["total"] == 2 and len(data["timeline"]) == 2
    path = tmp_path / "out" / "scale_up.json"
    r.write_report(rep, path)
    assert r.load_report(path) == json.loads(json.dumps(data))


def test_report_fails_without_criteria_or_with_errors() -> None:
    assert not r.Report("x").passed  # nothing evaluated is not a pass
    rep = r.Report("x", criteria=[r.Criterion("c", True, 0, 0, "ok")])
    assert rep.passed
    rep.errors.append("set-up failed: no server")
    assert not rep.passed and rep.as_dict()["passed"] is False
    rep.errors.clear()
    rep.criteria.append(r.Criterion("d", False, 1, 0, "bad"))
    assert not rep.passed


def test_load_report_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"stats": []}')
    with pytest.raises(ValueError, match="not a load test report"):
        r.load_report(path)


# -- the runner ------------------------------------------------------------------------

def test_split_argv_and_locust_command() -> None:
    ours, extra = split_argv(["scale_up", "--short", "--", "--max-p95-ms", "500"])
    assert ours == ["scale_up", "--short"] and extra == ["--max-p95-ms", "500"]
    assert split_argv(["--short"]) == (["--short"], [])
    cmd = locust_command("scale_up", "http://127.0.0.1:8080", Path("/r/scale_up.json"), 0.5,
                         True, ["--max-p95-ms", "500"])
    assert cmd[:4] == [sys.executable, "-m", "locust", "-f"]
    assert cmd[4].endswith("loadtests/locustfile.py")
    for flag, value in (("--scenario", "scale_up"), ("--host", "http://127.0.0.1:8080"),
                        ("--tick", "0.5"), ("--report", "/r/scale_up.json"),
                        ("--max-seconds", "180")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--headless" in cmd and "--short" in cmd and cmd[-2:] == ["--max-p95-ms", "500"]


def test_every_scenario_is_listed_by_its_name() -> None:
    assert list(SCENARIOS) == ["cold_start", "scale_up", "scale_to_zero", "burst_at_zero",
                              "workflow_load", "imagepipe_load"]
    assert all(s.name == n and (ROOT / "fixtures" / s.fixture).exists()
               for n, s in SCENARIOS.items())


def test_the_short_form_leaves_out_the_slow_scenarios() -> None:
    assert default_scenarios(False) == list(SCENARIOS)
    assert default_scenarios(True) == [n for n in SCENARIOS if n != "imagepipe_load"]


def judged(name: str, p: dict[str, object], records: list[list[object]],
           samples: list[dict[str, object]]) -> tuple[list[r.Criterion], dict[str, object]]:
    """A scenario's own criteria (the runner adds no_failures) over hand-made records and
    samples (no server, no locust)."""
    scenario = SCENARIOS[name]
    rep = r.Report(name, records=records, samples=samples, params=p)
    rep.scaling = objects.scaling(scenario.spec)
    run = SimpleNamespace(p=p, report=rep, scaling=rep.scaling, tick=0.5, sc=scenario)
    return scenario.judge(run), rep.figures


def test_cold_start_wants_every_trial_counted_cold_and_run() -> None:
    rows = [{"trial": n, "cold": True, "cold_ms": 900.0 + n, "warm_call_ms": 5.0,
             "pod_wait_ms": 895.0 + n, "server_cold_ms": 880.0} for n in (1, 2)]
    crit, fig = judged("cold_start", {"trials": 2, "rows": rows},
                       [rec(0, 901, name="cold start"), rec(1, 5, name="warm")], [])
    assert [c.passed for c in crit] == [True, True]
    assert "p50 902 ms" in str(fig["headline"]) and "pod wait 896 ms" in str(fig["headline"])
    rows[1]["cold"] = None  # /metrics unreadable proves nothing
    crit, _ = judged("cold_start", {"trials": 3, "rows": rows}, [rec(0, 901)], [])
    assert [c.passed for c in crit] == [False, False]
    assert crit[0].detail.startswith("trials [2] were not counted")


def test_scale_up_passes_when_the_expected_pods_are_ready_in_time() -> None:
    samples = [{"t": t, "ready": ready, "desired": 3} for t, ready in
               ((5.0, 1), (7.0, 2), (9.4, 3), (20.0, 3))]
    p = {"step_t": 5.0, "hold_s": 15.0, "step_users": 6, "within": 15.0}
    crit, fig = judged("scale_up", p, [rec(6, 200), rec(7, 210)], samples)
    assert [c.passed for c in crit] == [True]
    assert fig["expected_replicas"] == 3 and fig["ready_reached_after_s"] == 4.4
    assert fig["desired_reached_after_s"] == 0.0 and fig["ready_peak"] == 3


def test_scale_up_fails_when_the_pods_come_late_or_never() -> None:
    samples = [{"t": 5.0, "ready": 1, "desired": 3}, {"t": 21.0, "ready": 3, "desired": 3}]
    p = {"step_t": 5.0, "hold_s": 15.0, "step_users": 6, "within": 15.0}
    crit, _ = judged("scale_up", p, [rec(6, 200)], samples)
    assert not crit[0].passed and crit[0].measured == 16.0
    crit, _ = judged("scale_up", p, [rec(6, 200)], samples[:1])
    assert not crit[0].passed and crit[0].measured is None and "peak 1" in crit[0].detail
    crit, _ = judged("scale_up", {**p, "step_t": None}, [], samples)
    assert [c.passed for c in crit] == [False]  # the step never happened


def test_scale_to_zero_limit_is_window_plus_grace_plus_two_ticks() -> None:
    p = {"last_answer_t": 10.0, "zero_t": 20.0, "load_users": 4,
         "next_request": {"ok": True, "ms": 300.0, "cold": True}}
    crit, fig = judged("scale_to_zero", p, [rec(1, 100)], [{"t": 1.0, "ready": 2}])
    assert fig["zero_limit_s"] == 6 + 4 + 2 * 0.5 + 0.1
    assert [c.passed for c in crit] == [True, True]
    p["next_request"] = {"ok": True, "ms": 5.0, "cold": False}  # a pod was still there
    p["zero_t"] = 22.0
    crit, _ = judged("scale_to_zero", p, [rec(1, 100)], [{"t": 1.0, "ready": 2}])
    assert [c.passed for c in crit] == [False, False]
    del p["next_request"]
    crit, _ = judged("scale_to_zero", p, [rec(1, 100)], [{"t": 1.0, "ready": 2}])
    assert not crit[1].passed and "never made" in crit[1].detail


def test_burst_counts_every_answer_of_every_round() -> None:
    rounds = [{"round": 1, "requests": 100, "last_answer_s": 1.2},
              {"round": 2, "requests": 99, "last_answer_s": 1.5}]
    crit, fig = judged("burst_at_zero", {"rounds": 2, "burst_users": 100, "done": rounds},
                       [rec(0, 900, name="burst")], [{"t": 0.0, "ready": 4}])
    assert [c.passed for c in crit] == [False]
    assert crit[0].measured == 199 and "1.5 s" in str(fig["headline"])


def test_workflow_load_wants_executions_and_the_expected_output() -> None:
    p = {"hold_s": 2.0, "wf_users": 4}
    crit, fig = judged("workflow_load", p, [rec(0, 50, name="workflow")] * 3, [])
    assert [c.passed for c in crit] == [True] and fig["executions_per_s"] == 1.5
    assert [c.passed for c in judged("workflow_load", p, [], [])[0]] == [False]
    check, run = SCENARIOS["workflow_load"].check, SimpleNamespace(sc=SCENARIOS["workflow_load"])
    assert check is not None
    assert check(run, {"status": "SUCCEEDED", "output": {"n": 2, "results": [3, 3, 3]}}) is None
    assert "wrong output" in str(check(run, {"status": "SUCCEEDED", "output": {"n": 2}}))


def test_imagepipe_passes_only_when_some_function_scaled() -> None:
    p = {"pipe_steps": [1, 4]}
    by_fn = {"lt-img-inspect": [[0.0, 1, 1], [5.0, 3, 3]], "lt-img-classify": [[0.0, 1, 1]]}
    scenario = SCENARIOS["imagepipe_load"]
    rep = r.Report("imagepipe_load", records=[rec(1, 900, name="execution")], params=p)
    rep.figures["replicas_by_function"] = by_fn
    run = SimpleNamespace(p=p, report=rep)
    assert [c.passed for c in scenario.judge(run)] == [True, True]
    assert rep.figures["peak_ready_by_function"] == {"lt-img-inspect": 3, "lt-img-classify": 1}
    by_fn["lt-img-inspect"] = [[0.0, 1, 1]]
    assert [c.passed for c in scenario.judge(run)] == [True, False]


def test_pipeline_check_wants_labels_and_a_thumbnail() -> None:
    check = SCENARIOS["imagepipe_load"].check
    assert check is not None
    good = {"status": "SUCCEEDED", "output": {"labels": ["dark", "portrait"],
                                              "files": {"t.png": "AA=="}}}
    assert check(None, good) is None  # type: ignore[arg-type]
    assert "no labels" in str(check(None, {**good, "output": {"labels": []}}))  # type: ignore
    assert "FAILED" in str(check(None, {"status": "FAILED", "error": "X"}))  # type: ignore


def test_pod_usage_sums_a_functions_pods() -> None:
    pods = [{"status": {"usage": {"cpuPercent": 12.5, "memoryBytes": 2 << 20}}},
            {"status": {"usage": {"cpuPercent": 30.25, "memoryBytes": 3 << 20}}},
            {"status": {}}]  # a pod not sampled yet
    assert r.pod_usage(pods) == (42.75, 5 << 20)
    assert r.pod_usage([]) == (0.0, 0)


def test_runner_never_imports_locust() -> None:
    # locust monkey-patches with gevent at import; the runner must stay clean of it.
    code = ("import sys, loadtests.__main__, loadtests.report; "
            "sys.exit(1 if {'locust', 'gevent'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_plot_renders_a_png(tmp_path: Path) -> None:
    from loadtests.plot import render  # matplotlib: the unit env installs the load extra

    rep = r.Report("scale_up", function="lt-x", duration_s=3.0)
    rep.records = [rec(0.1 * i, 200 + i, i != 7) for i in range(25)]
    rep.samples = [{"t": 0.5 * i, "ready": min(i, 3), "desired": 3, "panic": i < 3}
                   for i in range(7)]
    rep.events = [{"t": 0.0, "label": "step"}]
    rep.criteria = [sc.no_failures(rep.records)]
    data = rep.as_dict()
    data["figures"] = {"expected_replicas": 3, "headline": "h",
                       "deadline": {"from": 0.0, "to": 2.0, "label": "d"}}
    out = render(data, tmp_path / "x.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # several functions (imagepipe_load): one ready line each, [t, ready, desired] rows
    data["figures"]["replicas_by_function"] = {"a": [[0.0, 1, 1], [1.0, 5, 5]],
                                               "b": [[0.0, 1, 1]]}
    data["figures"]["usage_by_function"] = {"a": [[0.0, 12.5, 2.0e7], [2.0, 40.0, 2.2e7]]}
    out = render(data, tmp_path / "y.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the benchmark's table ---------------------------------------------------------------

def test_bench_chain_and_table() -> None:
    from loadtests.bench import chain, table

    wf = chain(3, "task")
    assert wf["StartAt"] == "s0" and wf["States"]["s2"] == {
        "Type": "Task", "Resource": "passthrough", "End": True}
    assert chain(1, "pass")["States"] == {"s0": {"Type": "Pass", "End": True}}
    dist = {"count": 5, "p50": 101.0, "p90": 150.0, "max": 180.0}
    out = table({
        "workflow": {"tasks": 10, "median_ms": {"direct": 50.0, "workflow": 80.0, "pass": 9.0,
                                                "empty": 3.0},
                     "server_side_ms": {"engine_per_task": 1.2}, "overhead_per_task_ms": 3.0,
                     "pass_state_ms": 0.9},
        "trigger": {"file_write_to_function_start": dist, "raw_s": {}},
        "dashboard": {"functions": 40, "pods": 40, "loads": 5, "first_paint_s": 0.4,
                      "sampler_cpu_ms_per_period": 3.0, "sampler_core_percent": 0.15},
        "idle": {"functions": 40, "seconds": 30.0, "server_cpu_percent": 0.7}})
    assert "+3.0 ms per Task" in out and "p50 101 / p90 150 / max 180 ms (n=5)" in out
    assert re.search(r"\(chromium, median of 5\) +0\.400 s +< 1 s", out)
    assert "0.70 % of a core" in out and "raw" not in out
    out = table({
        "sampler": {"functions": 40, "seconds": 30.0, "on_off_on_cpu_percent": [3.0, 2.5, 3.5]},
        "deploy": {"first_build_s": {"count": 2, "p50": 0.5, "p90": 0.61, "max": 0.7}},
        "storm": {"functions": 40, "p50_ms_rounds": [900.4, 1200.0], "max_ms_rounds": [1500.0,
                  2100.0], "ok_rounds": [40, 39], "bare_docker_ms": dist}})
    assert "sampler on / off / on  3.00 / 2.50 / 3.50 % of a core" in out
    assert re.search(r"first build +p50 0\.500 / p90 0\.610 / max 0\.700 s \(n=2\) +<= 1 s", out)
    assert "p50 900 / 1200, max 1500 / 2100 ms, 40 / 39 of 40 ok" in out
    # A figure the run did not measure (here the storm's server CPU, a cached rebuild)
    # leaves its row out.
    assert "server CPU, storm" not in out and "cached rebuild" not in out


def test_the_image_pipeline_is_deployed_under_one_prefix() -> None:
    """The bench's trigger part and the imagepipe_load scenario share one set-up."""
    from loadtests.scenarios import deploy_imagepipe

    calls: list[tuple[str, ...]] = []
    flows: dict[str, object] = {}
    api = SimpleNamespace(
        deploy=lambda name, path, spec, wait: calls.append(("deploy", name, path.name)),
        wait_ready=lambda name, timeout: calls.append(("ready", name)),
        deploy_workflow=lambda name, definition: flows.update({name: definition}))
    names = deploy_imagepipe(api, "lt-img", "wf", skip="lt-img-thumbnail")
    assert names == ["lt-img-inspect", "lt-img-thumbnail", "lt-img-histogram",
                     "lt-img-classify"]
    assert [c for c in calls if c[0] == "deploy"] == [
        ("deploy", f"lt-img-{s}", s) for s in ("inspect", "histogram", "classify")]
    assert sorted(c[1] for c in calls if c[0] == "ready") == sorted(names)
    resources = set(re.findall(r'"Resource": "([^"]+)"', json.dumps(flows["wf"])))
    assert resources == set(names)
