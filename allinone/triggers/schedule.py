"""Schedule stepping: when a schedule trigger fires, pure and driven by ``now``.

A schedule is a five-field cron expression evaluated in a time zone (UTC unless the
trigger names an IANA zone), one of the usual macros (``@hourly``...), or
``@every DURATION`` (Go-style: ``1s``, ``1m30s``, ``500ms`` is refused: at least 1 s).
Cron expressions are parsed and stepped by ``cronsim`` (a maintained library that
follows Debian cron across DST changes: a time skipped by spring-forward runs right
after the change, a time repeated by fall-back runs once).

:func:`step` is the whole policy, as Kubernetes' CronJob controller has it:

- every scheduled time after ``state.last`` and not after ``now`` is due; only the
  latest runs, older ones are skipped and counted as missed (a server that was down
  for an hour runs an every-minute job once at start, not sixty times);
- ``startingDeadlineSeconds``: a due time older than the deadline is skipped (missed);
- ``concurrencyPolicy``: ``Allow`` starts regardless, ``Forbid`` holds the due time
  while a run is active (it starts when the run ends if still within the deadline, and
  a newer due time supersedes it), ``Replace`` cancels the active run and starts.

Invariants: ``state.last`` never moves backwards; a scheduled time fires at most once;
the counted misses plus the fires equal the due times seen (counting stops at
``SCAN_CAP`` per step so that a year-long outage costs bounded CPU).
Times are float seconds since the epoch (UTC).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALLOW, FORBID, REPLACE = "Allow", "Forbid", "Replace"
POLICIES = (ALLOW, FORBID, REPLACE)

# Due times counted in one step at most (a longer outage reports this many missed).
SCAN_CAP = 10_000
MIN_EVERY = 1.0
MAX_EVERY = 366 * 86400.0

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_FIELDS = "minute hour day-of-month month day-of-week"


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says what to write instead."""

    def __init__(self, message: str, field: str = "schedule") -> None:
        super().__init__(message)
        self.field = field


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``2s``, ``1m30s``, ``1.5h``."""
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ScheduleError(f"{text!r} is not a duration: write a number and a unit "
                            "(ms, s, m, h), e.g. '2s', '5m' or '1h30m'")
    return total


@dataclass(frozen=True)
class Schedule:
    expr: str                   # as the user wrote it
    cron: str | None            # five fields, macros expanded
    every: float | None         # seconds, for @every
    zone: ZoneInfo

    def next_after(self, t: float) -> float:
        """The first scheduled time strictly after ``t`` (for @every: ``t`` + interval)."""
        if self.every is not None:
            return t + self.every
        it = CronSim(self.cron or "", datetime.fromtimestamp(math.floor(t), self.zone))
        for dt in it:
            ts = dt.timestamp()
            if ts > t:  # guards against a wall-clock repeat in a fall-back hour
                return ts
        raise ScheduleError(f"schedule {self.expr!r} never fires")  # pragma: no cover

    def due(self, last: float, now: float, cap: int = SCAN_CAP) -> tuple[int, float | None]:
        """How many scheduled times lie in (last, now] (at most ``cap``) and the latest."""
        if now <= last:
            return 0, None
        if self.every is not None:
            n = math.floor((now - last) / self.every + 1e-9)
            return (min(n, cap), last + n * self.every) if n > 0 else (0, None)
        count, latest, prev = 0, None, last
        it = CronSim(self.cron or "", datetime.fromtimestamp(math.floor(last), self.zone))
        for dt in it:
            ts = dt.timestamp()
            if ts <= prev:
                continue
            if ts > now:
                break
            count, latest, prev = count + 1, ts, ts
            if count >= cap:
                # Too many to count: the latest due time is found walking backwards.
                back = CronSim(self.cron or "",
                               datetime.fromtimestamp(math.floor(now) + 1, self.zone),
                               reverse=True)
                latest = max(latest, next(back).timestamp())
                break
        return count, latest


def parse_schedule(expr: object, timezone: object = None) -> Schedule:
    """Check a schedule and its zone; the error names what is wrong and how to fix it."""
    if timezone is None:
        timezone = "UTC"
    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError("timezone must be an IANA zone name such as 'Europe/Berlin'",
                            "timezone")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"timezone {timezone!r} is not a known IANA zone; use a name "
                            "such as 'UTC', 'Europe/Berlin' or 'America/New_York'",
                            "timezone") from None
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError("schedule must be a cron expression such as '*/5 * * * *' or "
                            "'@every 10s'")
    text = " ".join(expr.split())
    if text.startswith("@every"):
        every = parse_duration(text[len("@every"):].strip())
        if not MIN_EVERY <= every <= MAX_EVERY:
            raise ScheduleError(f"@every takes an interval from 1s to 366 days, got {every:g} s")
        return Schedule(text, None, every, zone)
    cron = MACROS.get(text.lower(), text)
    if cron.startswith("@"):
        raise ScheduleError(f"unknown macro {text!r}; use one of {sorted(MACROS)} or "
                            "'@every DURATION'")
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError(f"cron expression {text!r} has {len(fields)} fields; it needs five: "
                            f"{_FIELDS} (e.g. '*/5 * * * *')")
    try:
        # Only the fields are checked here: any start date and zone would do.
        CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))  # pragma: no mutate
    except CronSimError as exc:
        raise ScheduleError(f"cron expression {text!r}: {str(exc).lower()} field "
                            f"(fields: {_FIELDS})") from None
    return Schedule(text, cron, None, zone)


@dataclass(frozen=True)
class Policy:
    concurrency: str = ALLOW
    deadline: float | None = None   # startingDeadlineSeconds


@dataclass(frozen=True)
class ScheduleState:
    last: float                     # latest scheduled time dealt with (fired, held or missed)
    pending: float | None = None    # a due time held by Forbid while a run is active


@dataclass(frozen=True)
class Step:
    state: ScheduleState
    fire: float | None              # the scheduled time to fire now
    replace: bool                   # cancel the active run before firing
    missed: int                     # scheduled times skipped by this step
    wake: float                     # step again then (or when the active run ends)


def step(schedule: Schedule, policy: Policy, state: ScheduleState, now: float,
         running: bool) -> Step:
    count, latest = schedule.due(state.last, now)
    missed = 0
    candidate = state.pending
    last = state.last
    if latest is not None:
        if candidate is not None:
            # A held time superseded by a newer one (no mutate: missed is 0 here, so "= 1"
            # is the same).
            missed += 1  # pragma: no mutate
        missed += count - 1
        candidate, last = latest, latest
    fire: float | None = None
    pending: float | None = None
    replace = False
    if candidate is not None:
        if policy.deadline is not None and now - candidate > policy.deadline:
            missed += 1
        elif running and policy.concurrency == FORBID:
            pending = candidate
        else:
            fire = candidate
            replace = running and policy.concurrency == REPLACE
    wake = schedule.next_after(last)
    if pending is not None and policy.deadline is not None:
        wake = min(wake, pending + policy.deadline + 0.001)
    return Step(ScheduleState(last, pending), fire, replace, missed, wake)
