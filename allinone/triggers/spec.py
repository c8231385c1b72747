"""The Trigger object: its keys, its spec with defaults, and validation.

A Trigger (``/allinone/triggers/NAME``) has one target (``{"function": NAME}`` or
``{"workflow": NAME}``) and one source: ``schedule`` (with ``timezone``,
``concurrencyPolicy``, ``startingDeadlineSeconds``) or ``watch``; optionally ``sink``
and ``retry``. :func:`normalize` fills the defaults and raises
:class:`~allinone.objects.ValidationError` naming the field, so the apiserver answers
400 with it verbatim. Folders must be absolute, existing directories outside the
server's state and the system's own folders: a trigger reads what it watches and hands
it to function code, and writes what function code returns.

Delivery records and the watch's seen-set live under their own prefixes, keyed by the
trigger's name, so listing triggers never lists them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.objects import ValidationError
from allinone.triggers.files import CREATED, EVENTS, MODIFIED
from allinone.triggers.schedule import POLICIES, ScheduleError, parse_schedule

Obj = dict[str, Any]

TRIGGERS_PREFIX = f"{objects.PREFIX}/triggers/"
EVENTS_PREFIX = f"{objects.PREFIX}/trigger-events/"
SEEN_PREFIX = f"{objects.PREFIX}/trigger-seen/"

DEFAULT_MAX_CONTENT = 1024 * 1024
MAX_CONTENT_LIMIT = 16 * 1024 * 1024
DEFAULT_RETRY: Obj = {"maxAttempts": 3, "backoffSeconds": 1.0}
DEFAULT_WATCH: Obj = {"patterns": ["*"], "events": [CREATED, MODIFIED], "recursive": False,
                      "maxContentBytes": DEFAULT_MAX_CONTENT}
TARGET_KINDS = ("function", "workflow")
_TOP = {"target", "schedule", "timezone", "concurrencyPolicy", "startingDeadlineSeconds",
        "watch", "sink", "retry"}
# Folders a trigger may neither watch nor write into (nor anything below them).
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/etc", "/boot", "/root", "/usr", "/bin", "/sbin",
               "/lib", "/lib64", "/var/lib", "/run")


def trigger_key(name: str) -> str:
    return f"{TRIGGERS_PREFIX}{name}"


def events_prefix(name: str) -> str:
    return f"{EVENTS_PREFIX}{name}/"


def seen_prefix(name: str) -> str:
    return f"{SEEN_PREFIX}{name}/"


def seen_key(name: str, rel: str) -> str:
    return seen_prefix(name) + hashlib.sha256(rel.encode()).hexdigest()[:40]


def _number(field: str, value: object, lo: float, hi: float, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"spec.{field} must be a number, got {json.dumps(value)}")
    if whole and not float(value).is_integer():
        raise ValidationError(f"spec.{field} must be a whole number, got {value}")
    if not lo <= value <= hi:
        raise ValidationError(f"spec.{field} must be between {lo:g} and {hi:g}, got {value}")
    return value


def _unknown(field: str, given: Obj, known: set[str]) -> None:
    extra = set(given) - known
    if extra:
        raise ValidationError(f"spec{field} has unknown field(s) {sorted(extra)}; "
                              f"known: {sorted(known)}")


def check_dir(field: str, value: object, forbidden: list[Path],
              is_dir: Callable[[Path], bool]) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"spec.{field} must be the absolute path of a folder")
    p = Path(value)
    if not p.is_absolute():
        raise ValidationError(f"spec.{field} {value!r} must be an absolute path "
                              "(on the server's machine)")
    resolved = Path(*p.parts)  # normalises '//' and trailing '/'
    if ".." in resolved.parts:
        raise ValidationError(f"spec.{field} {value!r} must not contain '..'")
    bad = [Path(d) for d in SYSTEM_DIRS] + forbidden
    if resolved == Path("/") or any(resolved == b or b in resolved.parents for b in bad):
        raise ValidationError(f"spec.{field} {value!r} is a system or server folder; "
                              "use a folder of your own, e.g. /srv/inbox")
    if not is_dir(resolved):
        raise ValidationError(f"spec.{field} {value!r} is not an existing directory; "
                              f"create it first (mkdir -p {resolved})")
    return str(resolved)


def normalize(user: object, *, forbidden: list[Path] | None = None,
              is_dir: Callable[[Path], bool] = Path.is_dir) -> Obj:
    """The full spec from a user's, checked; raises ValidationError naming the field."""
    forbidden = forbidden or []
    if not isinstance(user, dict):
        raise ValidationError('spec must be a JSON object, e.g. {"target": {"function": "f"}, '
                              '"schedule": "@every 10s"}')
    _unknown("", user, _TOP)
    target = user.get("target")
    if not isinstance(target, dict) or len(target) != 1 or next(iter(target)) not in TARGET_KINDS:
        raise ValidationError('spec.target must be {"function": NAME} or {"workflow": NAME}, '
                              f"got {json.dumps(target)}")
    kind, tname = next(iter(target.items()))
    try:
        objects.validate_name(tname)
    except ValidationError as exc:
        raise ValidationError(f"spec.target.{kind}: {exc}") from None
    spec: Obj = {"target": {kind: tname}}

    has_schedule, has_watch = "schedule" in user, "watch" in user
    if has_schedule == has_watch:
        raise ValidationError("spec needs exactly one source: 'schedule' (a cron expression "
                              "or '@every 10s') or 'watch' ({\"path\": \"/a/folder\"})")
    if has_schedule:
        try:
            parse_schedule(user["schedule"], user.get("timezone"))
        except ScheduleError as exc:
            raise ValidationError(f"spec.{exc.field}: {exc}") from None
        spec["schedule"] = " ".join(str(user["schedule"]).split())
        spec["timezone"] = user.get("timezone") or "UTC"
        policy = user.get("concurrencyPolicy", "Allow")
        if policy not in POLICIES:
            raise ValidationError(f"spec.concurrencyPolicy must be one of {list(POLICIES)}, "
                                  f"got {json.dumps(policy)}")
        spec["concurrencyPolicy"] = policy
        deadline = user.get("startingDeadlineSeconds")
        if deadline is not None:
            deadline = _number("startingDeadlineSeconds", deadline, 0, 366 * 86400)
        spec["startingDeadlineSeconds"] = deadline
    else:
        for f in ("timezone", "concurrencyPolicy", "startingDeadlineSeconds"):
            if f in user:
                raise ValidationError(f"spec.{f} applies to schedules only; remove it or "
                                      "use 'schedule' instead of 'watch'")
        w = user["watch"]
        if not isinstance(w, dict):
            raise ValidationError('spec.watch must be an object, e.g. {"path": "/srv/inbox", '
                                  '"patterns": ["*.png"]}')
        _unknown(".watch", w, {"path", *DEFAULT_WATCH})
        watch = copy.deepcopy(DEFAULT_WATCH)
        watch["path"] = check_dir("watch.path", w.get("path"), forbidden, is_dir)
        if "patterns" in w:
            pats = w["patterns"]
            if (not isinstance(pats, list) or not pats or len(pats) > 50
                    or not all(isinstance(p, str) and p and "/" not in p for p in pats)):
                raise ValidationError('spec.watch.patterns must be a list of 1 to 50 file-name '
                                      'patterns without "/", e.g. ["*.png", "*.jpg"]')
            watch["patterns"] = list(pats)
        if "events" in w:
            evs = w["events"]
            if (not isinstance(evs, list) or not evs
                    or not all(isinstance(e, str) and e in EVENTS for e in evs)):
                raise ValidationError(f"spec.watch.events must be a non-empty list of "
                                      f"{list(EVENTS)}, got {json.dumps(evs)}")
            watch["events"] = sorted(set(evs), key=EVENTS.index)
        if "recursive" in w:
            if not isinstance(w["recursive"], bool):
                raise ValidationError("spec.watch.recursive must be true or false")
            watch["recursive"] = w["recursive"]
        if "maxContentBytes" in w:
            watch["maxContentBytes"] = int(_number(
                "watch.maxContentBytes", w["maxContentBytes"], 0, MAX_CONTENT_LIMIT, whole=True))
        spec["watch"] = watch

    if user.get("sink") is not None:
        s = user["sink"]
        if not isinstance(s, dict):
            raise ValidationError('spec.sink must be an object {"directory": "/srv/outbox"}')
        _unknown(".sink", s, {"directory"})
        spec["sink"] = {"directory": check_dir("sink.directory", s.get("directory"),
                                               forbidden, is_dir)}
        if "watch" in spec and Path(spec["watch"]["path"]) in (
                Path(spec["sink"]["directory"]), *Path(spec["sink"]["directory"]).parents):
            raise ValidationError("spec.sink.directory must not be inside spec.watch.path: "
                                  "the results would trigger the watch again")

    retry = copy.deepcopy(DEFAULT_RETRY)
    if user.get("retry") is not None:
        r = user["retry"]
        if not isinstance(r, dict):
            raise ValidationError('spec.retry must be an object, e.g. {"maxAttempts": 3, '
                                  '"backoffSeconds": 1}')
        _unknown(".retry", r, set(DEFAULT_RETRY))
        if "maxAttempts" in r:
            retry["maxAttempts"] = int(_number("retry.maxAttempts", r["maxAttempts"], 1, 20,
                                               whole=True))
        if "backoffSeconds" in r:
            retry["backoffSeconds"] = float(_number("retry.backoffSeconds", r["backoffSeconds"],
                                                    0, 3600))
    spec["retry"] = retry
    return spec


# Answers worth another attempt, as Knative Eventing's delivery retries: the target's
# failures (5xx), not found yet (404, e.g. still deploying), timeout, conflict, too
# many requests. Anything else (400 bad arguments, 422 a workflow that failed) would
# fail the same way again.
RETRYABLE = frozenset({404, 408, 409, 429})


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE


def retry_delay(retry: Obj, attempt: int) -> float | None:
    """Seconds to wait after failed attempt ``attempt`` (1-based), None when no retry is left.

    Exponential, as Knative Eventing's delivery: backoff * 2^(attempt-1), at most 5 min.
    """
    merged = {**DEFAULT_RETRY, **retry}
    if attempt >= int(merged["maxAttempts"]):
        return None
    base = float(merged["backoffSeconds"])
    return float(min(base * 2 ** (attempt - 1), 300.0))
