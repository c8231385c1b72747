"""The simulator's event loop: known answers, and the dormancy shortcut is exact."""

from __future__ import annotations

import math

import pytest

from allinone.objects import ValidationError
from allinone.simulator import report
from allinone.simulator.engine import OK, REJECTED, TIMED_OUT, SimSpec, Simulation
from allinone.simulator.generate import Shape, generate
from allinone.simulator.model import RuntimeModel
from allinone.simulator.trace import Trace

# Round numbers, so every expected time below can be computed by hand.
MODEL = RuntimeModel(pod_start_ms=100, unpause_ms=10, parallel_starts=1,
                     activator_overhead_ms=0, poke_delay_ms=1, sync_delay_ms=2)


def spec(**scaling: object) -> SimSpec:
    """Without standby containers, so every start below is ``pod_start`` (the standby's
    own tests turn it on)."""
    return SimSpec.from_user({"scaling": scaling, "standby": "off"})


def test_one_request_every_10_s_with_30_s_grace_is_cold_once() -> None:
    trace = Trace.from_rows([("f", 10.0 * k, 0.05) for k in range(100)])
    [r] = Simulation(trace, spec(scaleToZeroGracePeriodSeconds=30), MODEL).run()
    assert list(r.cold) == [1] + [0] * 99
    assert r.pods_started == 1 and r.peak_pods == 1
    # the first waits for poke (1 ms) + plan (2 ms) + pod start (100 ms), then 50 ms
    assert r.latency[0] == pytest.approx(0.153)
    assert list(r.queued[1:]) == [0.0] * 99
    assert all(la == pytest.approx(0.05) for la in r.latency[1:])


def test_requests_far_apart_are_all_cold() -> None:
    trace = Trace.from_rows([("f", 400.0 * k, 0.05) for k in range(5)])
    [r] = Simulation(trace, spec(scaleToZeroGracePeriodSeconds=30), MODEL).run()
    assert list(r.cold) == [1] * 5
    assert r.pods_started == 5


def test_burst_of_100_at_zero_cc1_max10_queues_as_computed() -> None:
    service = 1.0
    trace = Trace.from_rows([("f", 5.0, service)] * 100)
    sim = Simulation(trace, spec(containerConcurrency=1, maxScale=10), MODEL)
    [r] = sim.run()
    assert sum(r.cold) == 100
    assert r.peak_pods == 10 and r.pods_started == 10
    assert r.desired_series[0] == (pytest.approx(5.001), 10)  # held 100 -> panic, capped
    # The 10 starts share one start's speed: all Ready at 5 + 0.001 + 0.002 + 10 x 0.1.
    ready = [0.003 + 1.0] * 10
    assert [t - 5.0 for t, _ in r.ready_series] == pytest.approx(ready)
    # FIFO: each request takes the earliest free slot; pod k serves its m-th request
    # from ready_k + m x 1 s, so the 100 slots are m = 0..9 on each of the 10 pods.
    starts = sorted(rk + m * service for rk in ready for m in range(10))
    assert list(r.queued) == pytest.approx(starts)
    assert list(r.latency) == pytest.approx([s + service for s in starts])
    assert set(r.status) == {OK}


def test_container_concurrency_holds_the_excess() -> None:
    # One warm pod (minScale 1), cc 2: three simultaneous requests -> the third waits
    # for the first slot to free (FIFO), 0.5 s later.
    trace = Trace.from_rows([("f", 10.0, 0.5)] * 3)
    [r] = Simulation(trace, spec(containerConcurrency=2, minScale=1, maxScale=1),
                     MODEL).run()
    assert list(r.cold) == [0, 0, 0]
    assert list(r.queued) == pytest.approx([0.0, 0.0, 0.5])
    assert list(r.latency) == pytest.approx([0.5, 0.5, 1.0])


def test_queue_limit_and_timeout() -> None:
    trace = Trace.from_rows([("f", 1.0, 100.0)] * 4)
    s = SimSpec.from_user({"scaling": {"containerConcurrency": 1, "maxScale": 1},
                           "timeoutSeconds": 5})
    [r] = Simulation(trace, s, MODEL, queue_limit=2).run()
    # At zero every request waits: 2 fit the queue, the 3rd and 4th are refused at once;
    # the 1st runs once the pod is Ready, the 2nd never gets the one slot within 5 s.
    assert list(r.status) == [OK, TIMED_OUT, REJECTED, REJECTED]
    assert r.latency[1] == pytest.approx(5.0)


def test_paused_retention_resumes_instead_of_starting() -> None:
    trace = Trace.from_rows([("f", 0.0, 0.05), ("f", 300.0, 0.05)])
    keep = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30},
                              "keepPausedSeconds": 600, "standby": "created"})
    [r] = Simulation(trace, keep, MODEL).run()
    assert r.pods_started == 1 and r.pods_resumed == 1
    assert r.latency[1] == pytest.approx(0.001 + 0.002 + 0.010 + 0.05)
    [r0] = Simulation(trace, spec(scaleToZeroGracePeriodSeconds=30), MODEL).run()
    assert r0.pods_started == 2 and r0.pods_resumed == 0


def test_parallel_starts_overlap() -> None:
    trace = Trace.from_rows([("f", 5.0, 1.0)] * 40)
    model = RuntimeModel(pod_start_ms=100, parallel_starts=4, poke_delay_ms=1,
                         sync_delay_ms=2, activator_overhead_ms=0)
    [r] = Simulation(trace, spec(containerConcurrency=1, maxScale=8, target=1), model).run()
    # 8 starts at once, 4 at full speed: each at half speed, all done after 0.2 s.
    assert [round(t - 5.0, 6) for t, _ in r.ready_series[:8]] == [0.203] * 8


def test_starts_share_the_engine_as_they_come_and_go() -> None:
    # Start 1 alone from 5.003 (full speed, parallel 1); start 2 joins at 5.053 and both
    # go at half speed: start 1 has 0.05 s left -> done at 5.153; start 2 has done 0.05
    # of 0.1 by then and finishes alone at full speed at 5.203.
    trace = Trace.from_rows([("f", 5.0, 1.0), ("f", 5.05, 1.0)])
    s = spec(containerConcurrency=1, maxScale=2, target=1,
             targetUtilizationPercentage=100)
    [r] = Simulation(trace, s, MODEL).run()
    assert [round(t, 6) for t, _ in r.ready_series[:2]] == [5.153, 5.203]


def mixed_trace() -> Trace:
    return generate({
        "rare": Shape("rare", per_day=2000, duration_ms=30, sigma=0.5),
        "bursty": Shape("bursty", rate=4, on=40, off=200, duration_ms=120, sigma=0.5),
        "spiky": Shape("spiky", rate=0.05, spike_every=300, spike_size=60, duration_ms=80),
    }, 1800, seed=11)


@pytest.mark.parametrize("scaling", [
    {"containerConcurrency": 2},
    {"stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 2, "activationScale": 2},
    {"scaleDownDelaySeconds": 20, "scaleToZeroPodRetentionSeconds": 45},
    {"metric": "rps", "target": 1, "minScale": 1},
    {"target": 1, "keepPausedSeconds": 60},
])
def test_skipped_ticks_give_the_same_results_as_deciding_every_tick(
        scaling: dict[str, object]) -> None:
    trace = mixed_trace()
    keep = scaling.pop("keepPausedSeconds", 0)
    s = SimSpec.from_user({"scaling": scaling, "keepPausedSeconds": keep})
    fast_sim = Simulation(trace, s, MODEL, seed=4)
    fast = fast_sim.run()
    exact_sim = Simulation(trace, s, MODEL, seed=4, exact_ticks=True)
    exact = exact_sim.run()
    # It did skip work: ticks asleep, and decides the scaler found standing.
    assert fast_sim.stats.ticks < exact_sim.stats.ticks
    assert sum(r.decisions for r in fast) < sum(r.decisions for r in exact)
    assert fast_sim.stats.catch_ups > 0
    for a, b in zip(fast, exact, strict=True):
        assert list(a.latency) == list(b.latency)
        assert list(a.cold) == list(b.cold)
        assert a.desired_series == b.desired_series
        assert a.ready_series == b.ready_series
        assert a.pods_series == b.pods_series and a.panic_series == b.panic_series
        assert list(a.status) == list(b.status) and a.paused_seconds == b.paused_seconds
        assert a.pod_seconds == pytest.approx(b.pod_seconds)
        assert a.panic_seconds == pytest.approx(b.panic_seconds)


def test_same_seed_same_run() -> None:
    trace = mixed_trace()
    runs = [report.summary(Simulation(trace, spec(), MODEL, seed=9).run(), {})
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_summary_figures() -> None:
    trace = Trace.from_rows([("f", 10.0 * k, 0.05) for k in range(10)] + [("g", 3.0, 0.2)])
    data = report.summary(Simulation(trace, spec(), MODEL).run(), {"x": 1})
    f = data["functions"]["f"]
    assert f["invocations"] == 10 and f["cold_starts"] == 1
    assert f["latency_ms"]["p50"] == pytest.approx(50.0)
    assert f["latency_ms"]["max"] == pytest.approx(153.0)
    assert f["queueing_ms"]["max"] == pytest.approx(103.0)
    assert f["peak_pods"] == 1
    assert data["total"]["invocations"] == 11 and data["total"]["cold_starts"] == 2
    assert data["total"]["peak_pods"] == 2
    table = report.comparison_table([("a", data["total"])])
    assert "cold starts" in table and "pod-seconds" in table


def test_spec_is_validated_like_the_api() -> None:
    with pytest.raises(ValidationError, match="maxScale"):
        SimSpec.from_user({"scaling": {"maxScale": 0}})
    with pytest.raises(ValidationError, match="keepPausedSeconds"):
        SimSpec.from_user({"keepPausedSeconds": -1})


def test_parked_pod_expires_on_the_kubelets_check_grid() -> None:
    # Kept 60 s: the pod parked at its drain is removed by the first 1 s check more than
    # 60 s later, so the request at 300 s starts a new pod.
    trace = Trace.from_rows([("f", 0.0, 0.05), ("f", 300.0, 0.05)])
    keep = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30},
                              "keepPausedSeconds": 60, "standby": "created"})
    [r] = Simulation(trace, keep, MODEL).run()
    assert r.pods_started == 2 and r.pods_resumed == 0
    parked_at = next(t for t, n in r.pods_series if n == 0)
    assert r.paused_seconds == pytest.approx(math.floor(parked_at + 60) + 1 - parked_at)


def test_a_start_abandoned_before_ready_is_removed_unparked() -> None:
    # A 120 s container start, and the only request gives up after 1 s: the function
    # goes to zero while its pod is still starting; that pod never serves, is not
    # parked (never ready), and its start finishing later changes nothing.
    trace = Trace.from_rows([("f", 1.0, 0.05)])
    slow = RuntimeModel(pod_start_ms=120_000, poke_delay_ms=1, sync_delay_ms=2,
                        activator_overhead_ms=0)
    s = SimSpec.from_user({"timeoutSeconds": 1, "keepPausedSeconds": 600,
                           "standby": "created"})
    [r] = Simulation(trace, s, slow, drain_after=200).run()
    assert list(r.status) == [TIMED_OUT]
    assert r.ready_series == [] and r.pods_started == 1 and r.peak_pods == 1
    gone = r.pods_series[-1]
    assert gone[1] == 0 and 1.003 < gone[0] < 121.003
    assert r.paused_seconds == 0.0
    assert r.pod_seconds == pytest.approx(gone[0] - 1.003)


def test_unlimited_concurrency_still_has_the_pods_connection_bound() -> None:
    # containerConcurrency 0 is "unlimited", but the Throttler gives a pod at most
    # POD_MAX_CONNECTIONS requests at once (what its shim serves): one over waits.
    from allinone.runtime.base import POD_MAX_CONNECTIONS

    n = POD_MAX_CONNECTIONS + 1
    trace = Trace.from_rows([("f", 10.0, 2.0)] * n)
    [r] = Simulation(trace, spec(minScale=1, maxScale=1), MODEL).run()
    assert list(r.queued[:-1]) == [0.0] * (n - 1)
    assert r.queued[-1] == pytest.approx(2.0)
    assert set(r.status) == {OK}


def test_a_woken_request_with_no_slot_waits_again_at_the_end() -> None:
    # cc 1, one pod: A runs 0.5 s; B and C wait. A's end wakes one (B); C keeps waiting
    # until B's end: FIFO through the Throttler's queue.
    trace = Trace.from_rows([("f", 10.0, 0.5), ("f", 10.0, 0.5), ("f", 10.0, 0.5)])
    [r] = Simulation(trace, spec(containerConcurrency=1, minScale=1, maxScale=1),
                     MODEL).run()
    assert list(r.queued) == pytest.approx([0.0, 0.5, 1.0])


def test_a_standby_takes_docker_s_create_off_each_start_at_zero() -> None:
    trace = Trace.from_rows([("f", 10.0, 0.05), ("f", 400.0, 0.05)])
    on = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30},
                            "standby": "created"})
    [r] = Simulation(trace, on, MODEL).run()
    # MODEL's create is the default 20 ms: poke 1 + plan 2 + (100 - 20) + 50 ms, both
    # times (a new standby is created 20 ms after the first pod went).
    assert list(r.latency) == pytest.approx([0.133, 0.133])
    assert list(r.cold) == [1, 1] and r.pods_started == 2
    [off] = Simulation(trace, spec(scaleToZeroGracePeriodSeconds=30), MODEL).run()
    assert list(off.latency) == pytest.approx([0.153, 0.153])


def test_only_one_pod_of_a_scale_up_from_zero_starts_the_standby() -> None:
    trace = Trace.from_rows([("f", 5.0, 1.0), ("f", 5.0, 1.0)])
    on = SimSpec.from_user({"scaling": {"containerConcurrency": 1, "maxScale": 2,
                                        "target": 1, "targetUtilizationPercentage": 100},
                            "standby": "created"})
    model = RuntimeModel(pod_start_ms=100, create_ms=20, parallel_starts=2,
                         poke_delay_ms=1, sync_delay_ms=2, activator_overhead_ms=0)
    [r] = Simulation(trace, on, model).run()
    # Both created at 5.003, both at full speed: the standby's after 80 ms, the other
    # after the whole 100 ms.
    assert [round(t, 6) for t, _ in r.ready_series[:2]] == [5.083, 5.103]


@pytest.mark.parametrize("bad", ["yes", True, None])
def test_standby_must_be_a_server_mode(bad: object) -> None:
    with pytest.raises(ValidationError, match="standby must be one of frozen, created, off"):
        SimSpec.from_user({"standby": bad})
    assert SimSpec.from_user({}).standby == "frozen"  # the server's default


def test_a_frozen_standby_is_resumed_at_zero() -> None:
    trace = Trace.from_rows([("f", 10.0, 0.05), ("f", 400.0, 0.05)])
    frozen = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30}})
    [r] = Simulation(trace, frozen, MODEL).run()
    # Made while it was deployed, and again a whole start (100 ms) after the pod went:
    # each cold request is poke 1 + plan 2 + unpause 10 + 50 ms.
    assert list(r.latency) == pytest.approx([0.063, 0.063])
    assert list(r.cold) == [1, 1] and r.pods_resumed == 2 and r.pods_started == 0


def test_a_pod_made_while_the_standby_is_made_waits_for_it() -> None:
    # The first pod goes at 102.002; the next standby is ready at 102.102 frozen
    # (a whole start), at 102.022 created (the create).
    frozen = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30}})
    [r] = Simulation(Trace.from_rows([("f", 10.0, 0.05), ("f", 102.05, 0.05)]), frozen,
                     MODEL).run()
    assert r.pods_series[1][0] == pytest.approx(102.002)
    # Asked at 102.053, handed over healthy at 102.102 without a pause: 52 + 50 ms.
    assert r.latency[1] == pytest.approx(0.102)
    created = SimSpec.from_user({"scaling": {"scaleToZeroGracePeriodSeconds": 30},
                                 "standby": "created"})
    [c] = Simulation(Trace.from_rows([("f", 10.0, 0.05), ("f", 102.005, 0.05)]), created,
                     MODEL).run()
    # Asked at 102.008: the rest of the create (14 ms), then 100 - 20 ms; + 3 + 50 ms.
    assert c.latency[1] == pytest.approx(0.003 + 0.014 + 0.080 + 0.05)


def test_a_function_is_visited_only_when_its_decision_can_change() -> None:
    # One 100 ms request at 10 s, default spec (window 60 s, grace 30 s). Ticks visited:
    # 0 (no data yet: no promise), 2 (zero sample: 0 stands for ever: asleep); the
    # request wakes it at 10 (catch-up on the 10 s grid tick: idle, its decision stands,
    # no decide), the poke decides at 10.001 (1 pod), 12 (the request's interval ends
    # at 12: 1 stands until 12 + 60), 72 (window empty: Inactive, 1 stands until
    # 72 + 30), 102 (0: the pod goes at 102.002 and wakes it), 104 (one ready pod less:
    # decide; 0 stands for ever). Every other tick of the 200 s is slept through.
    trace = Trace.from_rows([("f", 10.0, 0.1)])
    sim = Simulation(trace, spec(), MODEL, drain_after=200)
    [r] = sim.run()
    assert (sim.stats.ticks, sim.stats.catch_ups, r.decisions) == (6, 1, 7)
    assert r.desired_series == [(10.001, 1), (102.0, 0)]
    assert [t for t, _ in r.ready_series] == [pytest.approx(10.103), pytest.approx(102.002)]
    exact = Simulation(trace, spec(), MODEL, drain_after=200, exact_ticks=True)
    [e] = exact.run()
    assert exact.stats.ticks == 106 and e.decisions == 107  # 0, 2, ..., 210; + the poke
    assert e.desired_series == r.desired_series and e.ready_series == r.ready_series
