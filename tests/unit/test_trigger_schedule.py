"""Schedule stepping (CronJob policies, missed fires, deadline, zones, DST) on a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from allinone.clock import ManualClock
from allinone.triggers.schedule import (
    ALLOW,
    FORBID,
    REPLACE,
    SCAN_CAP,
    Policy,
    ScheduleError,
    ScheduleState,
    parse_duration,
    parse_schedule,
    step,
)


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize("text,seconds", [
    ("1s", 1), ("2s", 2), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25), ("1h0m5s", 3605),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "s", "1s2", "-1s", "1 s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ScheduleError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("expr,zone,field,message", [
    ("* * * *", None, "schedule", "has 4 fields; it needs five"),
    ("* * * * * *", None, "schedule", "has 6 fields"),
    ("61 * * * *", None, "schedule", "bad minute field"),
    ("* 24 * * *", None, "schedule", "bad hour field"),
    ("* * * 13 *", None, "schedule", "bad month field"),
    ("@every 0.5s", None, "schedule", "from 1s to 366 days"),
    ("@every soon", None, "schedule", "not a duration"),
    ("@fortnightly", None, "schedule", "unknown macro"),
    ("", None, "schedule", "must be a cron expression"),
    ("* * * * *", "Mars/Olympus", "timezone", "not a known IANA zone"),
    ("* * * * *", "", "timezone", "IANA zone name"),
])
def test_bad_schedules_name_the_problem(expr: str, zone: str | None, field: str,
                                        message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(expr, zone)
    assert info.value.field == field


def test_macros_expand() -> None:
    s = parse_schedule("@hourly")
    assert iso(s.next_after(utc(2026, 1, 1, 10, 15))) == "2026-01-01 11:00:00"
    assert iso(parse_schedule("@daily").next_after(utc(2026, 1, 1, 10))) == "2026-01-02 00:00:00"


# Each row: (schedule, policy, last, now, running) -> (fire, missed, replace, new last, wake)
T = utc(2026, 1, 1, 12, 0, 0)
CASES = [
    # @every: not yet due; exactly due; an outage of 65 s runs the latest once, 5 missed
    ("@every 10s", Policy(), T, T + 5, False, None, 0, False, T, T + 10),
    ("@every 10s", Policy(), T, T + 10, False, T + 10, 0, False, T + 10, T + 20),
    ("@every 10s", Policy(), T, T + 65, False, T + 60, 5, False, T + 60, T + 70),
    # startingDeadlineSeconds: the latest due time is 5 s old
    ("@every 10s", Policy(deadline=3), T, T + 65, False, None, 6, False, T + 60, T + 70),
    ("@every 10s", Policy(deadline=10), T, T + 65, False, T + 60, 5, False, T + 60, T + 70),
    ("@every 10s", Policy(deadline=5), T, T + 65, False, T + 60, 5, False, T + 60, T + 70),
    # concurrency while a run is active
    ("@every 10s", Policy(ALLOW), T, T + 10, True, T + 10, 0, False, T + 10, T + 20),
    ("@every 10s", Policy(REPLACE), T, T + 10, True, T + 10, 0, True, T + 10, T + 20),
    ("@every 10s", Policy(REPLACE), T, T + 10, False, T + 10, 0, False, T + 10, T + 20),
    ("@every 10s", Policy(FORBID), T, T + 10, True, None, 0, False, T + 10, T + 20),
    ("@every 10s", Policy(FORBID), T, T + 10, False, T + 10, 0, False, T + 10, T + 20),
    # cron in UTC: every five minutes, and a 1 h outage (12 times due, 11 missed)
    ("*/5 * * * *", Policy(), T, T + 299, False, None, 0, False, T, T + 300),
    ("*/5 * * * *", Policy(), T, T + 300, False, T + 300, 0, False, T + 300, T + 600),
    ("*/5 * * * *", Policy(), T, T + 3601, False, T + 3600, 11, False, T + 3600, T + 3900),
    ("*/5 * * * *", Policy(deadline=0.5), T, T + 3601, False, None, 12, False, T + 3600,
     T + 3900),
]


@pytest.mark.parametrize("expr,policy,last,now,running,fire,missed,replace,new_last,wake", CASES)
def test_step(expr: str, policy: Policy, last: float, now: float, running: bool,
              fire: float | None, missed: int, replace: bool, new_last: float,
              wake: float) -> None:
    s = step(parse_schedule(expr), policy, ScheduleState(last), now, running)
    assert (s.fire, s.missed, s.replace, s.state.last, s.wake) == (
        fire, missed, replace, new_last, wake)


def test_forbid_holds_then_runs_when_the_run_ends() -> None:
    sched, policy = parse_schedule("@every 10s"), Policy(FORBID, deadline=30)
    clock = ManualClock()
    t0 = clock.wall()
    s = step(sched, policy, ScheduleState(t0), t0 + 10, running=True)
    assert s.fire is None and s.state.pending == t0 + 10
    clock.advance(14)  # the run ends at +14 s
    s = step(sched, policy, s.state, clock.wall(), running=False)
    assert s.fire == t0 + 10 and s.missed == 0 and s.state.pending is None


def test_forbid_held_time_is_superseded_by_a_newer_one() -> None:
    sched, policy = parse_schedule("@every 10s"), Policy(FORBID)
    t0 = ManualClock().wall()
    s = step(sched, policy, ScheduleState(t0), t0 + 10, running=True)
    s = step(sched, policy, s.state, t0 + 20, running=True)
    assert s.fire is None and s.missed == 1 and s.state.pending == t0 + 20
    s = step(sched, policy, s.state, t0 + 21, running=False)
    assert s.fire == t0 + 20 and s.missed == 0


def test_forbid_held_time_expires_at_the_deadline() -> None:
    sched, policy = parse_schedule("@every 60s"), Policy(FORBID, deadline=5)
    t0 = ManualClock().wall()
    s = step(sched, policy, ScheduleState(t0), t0 + 60, running=True)
    assert s.state.pending == t0 + 60
    assert s.wake == pytest.approx(t0 + 65.001)  # woken to count it, not at the next minute
    s = step(sched, policy, s.state, s.wake, running=True)
    assert s.fire is None and s.missed == 1 and s.state.pending is None
    assert s.wake == t0 + 120


def test_every_fire_happens_once_on_a_manual_clock() -> None:
    """Stepping at every wake-up over 10 minutes fires each scheduled time exactly once."""
    sched, policy = parse_schedule("*/1 * * * *"), Policy()
    clock = ManualClock()
    start = utc(2026, 1, 1, 0, 0, 30)
    state = ScheduleState(start)
    fired: list[float] = []
    now = start
    while now < start + 600:
        s = step(sched, policy, state, now, running=False)
        if s.fire is not None:
            fired.append(s.fire)
        assert s.missed == 0
        state = s.state
        clock.advance(s.wake - now)
        now = s.wake
    assert [iso(t) for t in fired] == [f"2026-01-01 00:{m:02d}:00" for m in range(1, 11)]


def test_long_outage_is_counted_up_to_the_cap() -> None:
    s = step(parse_schedule("* * * * *"), Policy(), ScheduleState(T), T + 30 * 86400 + 5, False)
    assert s.fire == T + 30 * 86400
    assert s.missed == SCAN_CAP - 1
    assert s.wake == T + 30 * 86400 + 60


@pytest.mark.parametrize("zone,after,expected_utc", [
    # 09:00 in New York is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT)
    ("America/New_York", utc(2026, 1, 10, 0), "2026-01-10 14:00:00"),
    ("America/New_York", utc(2026, 7, 10, 0), "2026-07-10 13:00:00"),
    ("Asia/Kolkata", utc(2026, 7, 10, 0), "2026-07-10 03:30:00"),
    ("UTC", utc(2026, 7, 10, 0), "2026-07-10 09:00:00"),
])
def test_time_zones(zone: str, after: float, expected_utc: str) -> None:
    assert iso(parse_schedule("0 9 * * *", zone).next_after(after)) == expected_utc


def test_dst_spring_forward_runs_the_skipped_time_once_right_after() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 job runs at 03:00 CEST (01:00 UTC).
    s = parse_schedule("30 2 * * *", "Europe/Berlin")
    t, runs = utc(2026, 3, 27, 12), []
    for _ in range(3):
        t = s.next_after(t)
        runs.append(iso(t))
    assert runs == ["2026-03-28 01:30:00", "2026-03-29 01:00:00", "2026-03-30 00:30:00"]


def test_dst_fall_back_runs_a_repeated_time_once() -> None:
    # Berlin repeats 02:00-03:00 on 2026-10-25: a 02:30 job runs once that day.
    s = parse_schedule("30 2 * * *", "Europe/Berlin")
    count, latest = s.due(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert count == 1 and latest is not None and iso(latest) == "2026-10-25 00:30:00"
    # An every-30-minutes job runs in both repeated hours: it is about elapsed time.
    every30 = parse_schedule("*/30 * * * *", "Europe/Berlin")
    assert every30.due(utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)) == (4, utc(2026, 10, 25, 2))


# --- what a user reads: each refusal word for word, each bound inclusive -------------


@pytest.mark.parametrize(("expr", "timezone", "field", "message"), [
    ("*/5 * * * *", 5, "timezone",
     "timezone must be an IANA zone name such as 'Europe/Berlin'"),
    ("*/5 * * * *", "Mars/Base", "timezone",
     "timezone 'Mars/Base' is not a known IANA zone; use a name such as 'UTC', "
     "'Europe/Berlin' or 'America/New_York'"),
    ("  ", None, "schedule",
     "schedule must be a cron expression such as '*/5 * * * *' or '@every 10s'"),
    ("@sometimes", None, "schedule",
     "unknown macro '@sometimes'; use one of ['@annually', '@daily', '@hourly', "
     "'@midnight', '@monthly', '@weekly', '@yearly'] or '@every DURATION'"),
    ("@every 5x", None, "schedule",
     "'5x' is not a duration: write a number and a unit (ms, s, m, h), e.g. '2s', '5m' "
     "or '1h30m'"),
])
def test_refusals_word_for_word(expr: str, timezone: object, field: str,
                                message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr, timezone)
    assert (info.value.field, str(info.value)) == (field, message)


def test_every_bounds_are_inclusive_and_the_schedule_keeps_its_text_and_zone() -> None:
    assert parse_schedule("@every 1s").every == 1.0
    assert parse_schedule("@every 8784h").every == 366 * 86400.0
    every = parse_schedule("@every   10s", "Europe/Berlin")
    assert (every.expr, every.zone.key) == ("@every 10s", "Europe/Berlin")
    cron = parse_schedule("0  *  * * *")
    assert (cron.expr, cron.cron, cron.zone.key) == ("0 * * * *", "0 * * * *", "UTC")


def test_forbid_with_a_deadline_wakes_just_after_the_held_time_expires() -> None:
    s = step(parse_schedule("@every 60s"), Policy(FORBID, 10.0), ScheduleState(0.0), 60.0,
             running=True)
    assert (s.fire, s.state.pending) == (None, 60.0)
    assert s.wake == 60.0 + 10.0 + 0.001
