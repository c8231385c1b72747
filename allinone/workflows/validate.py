"""Validation of ASL definitions at create/update time (pure).

:func:`validate` raises :class:`DefinitionError` whose message starts with the path of
what is wrong (``States.check.Next: no state named "chek"``), so a user can find it.
Checked: the top-level and per-type fields (no unknown ones), their types, that
``StartAt``/``Next``/``Default``/catcher ``Next`` name states of the same machine, that
every state is reachable from ``StartAt``, that a terminal state exists, paths parse
(reference paths where ASL requires them), intrinsic calls parse, Choice rules have
exactly one operator, retriers are well-formed and ``States.ALL`` comes alone and last.
Task ``Resource`` must be a function name; whether it exists is a run-time question
(it may be deployed later).
"""

from __future__ import annotations

import json
from typing import Any

from allinone.objects import NAME_RE
from allinone.workflows import choice
from allinone.workflows.errors import ALL
from allinone.workflows.intrinsics import IntrinsicSyntaxError, is_intrinsic, parse
from allinone.workflows.paths import PathSyntaxError, check_path

MAX_STATES = 500

_IO = {"InputPath", "OutputPath"}
_COMMON = {"Type", "Comment"}
_FLOW = {"Next", "End"}
_RESULT = {"ResultPath", "Parameters"}
FIELDS: dict[str, set[str]] = {
    "Task": _COMMON | _IO | _FLOW | _RESULT | {"Resource", "ResultSelector", "Retry", "Catch",
                                                "TimeoutSeconds", "TimeoutSecondsPath"},
    "Pass": _COMMON | _IO | _FLOW | _RESULT | {"Result"},
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Wait": _COMMON | _IO | _FLOW | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": _COMMON | _IO,
    "Fail": _COMMON | {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _COMMON | _IO | _FLOW | _RESULT | {"Branches", "ResultSelector", "Retry",
                                                    "Catch"},
    "Map": _COMMON | _IO | _FLOW | _RESULT | {"ItemsPath", "ItemProcessor", "Iterator",
                                               "ItemSelector", "MaxConcurrency",
                                               "ResultSelector", "Retry", "Catch"},
}
_MACHINE = {"StartAt", "States", "Comment", "TimeoutSeconds", "Version"}
_BRANCH = {"StartAt", "States", "Comment"}
_PROCESSOR = {"StartAt", "States", "Comment", "ProcessorConfig"}
_RETRY = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds",
          "JitterStrategy", "Comment"}
_CATCH = {"ErrorEquals", "Next", "ResultPath", "Comment"}


class DefinitionError(ValueError):
    pass


def _fail(path: str, msg: str) -> DefinitionError:
    return DefinitionError(f"{path}: {msg}")


def _js(v: object) -> str:
    return json.dumps(v)[:80]


def validate(definition: object) -> dict[str, Any]:
    """Check a whole state machine; returns it unchanged. Raises DefinitionError."""
    if not isinstance(definition, dict):
        raise DefinitionError("definition: must be a JSON object with StartAt and States")
    _machine(definition, "", _MACHINE, count=[0])
    if "TimeoutSeconds" in definition:
        _positive_int(definition["TimeoutSeconds"], "TimeoutSeconds", 1, 365 * 24 * 3600)
    return definition


def _machine(m: dict[str, Any], prefix: str, allowed: set[str], count: list[int]) -> None:
    where = prefix.rstrip(".") or "definition"
    _unknown(m, allowed, where if prefix else "")
    if "Comment" in m and not isinstance(m["Comment"], str):
        raise _fail(f"{prefix}Comment", f"must be a string, got {_js(m['Comment'])}")
    for f in ("StartAt", "States"):
        if f not in m:
            raise _fail(f"{prefix}{f}", "is required")
    states = m["States"]
    if not isinstance(states, dict) or not states:
        raise _fail(f"{prefix}States", "must be a non-empty object of named states")
    count[0] += len(states)
    if count[0] > MAX_STATES:
        raise _fail(f"{prefix}States", f"more than {MAX_STATES} states in the definition")
    if not isinstance(m["StartAt"], str) or m["StartAt"] not in states:
        raise _fail(f"{prefix}StartAt", f"no state named {_js(m['StartAt'])}")
    edges: dict[str, list[str]] = {}
    terminal = False
    for name, state in states.items():
        path = f"{prefix}States.{name}"
        if len(name) > 80 or not name:
            raise _fail(path, "state names are 1 to 80 characters")
        edges[name] = _state(state, path, states, count)
        if state["Type"] in ("Succeed", "Fail") or state.get("End") is True:
            terminal = True
    if not terminal:
        raise _fail(f"{prefix}States", "no terminal state: some state needs \"End\": true, "
                    "or a Succeed or Fail state")
    seen, todo = set(), [m["StartAt"]]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(edges[n])
    for name in states:
        if name not in seen:
            raise _fail(f"{prefix}States.{name}", f"is not reachable from StartAt "
                        f"{_js(m['StartAt'])}: no Next, Default or Catch leads to it")


def _unknown(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(f"{path}.{extra[0]}" if path else extra[0],
                    f"unknown field; allowed here: {', '.join(sorted(allowed))}")


def _target(name: object, path: str, states: dict[str, Any]) -> str:
    if not isinstance(name, str) or name not in states:
        raise _fail(path, f"no state named {_js(name)}")
    return name


def _positive_int(v: object, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(path, f"must be a whole number from {lo} to {hi}, got {_js(v)}")
    return v


def _number(v: object, path: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise _fail(path, f"must be a number from {lo:g} to {hi:g}, got {_js(v)}")
    return float(v)


def _path(v: object, path: str, *, reference: bool, nullable: bool = False) -> None:
    if v is None and nullable:
        return
    try:
        check_path(v, reference=reference)
    except PathSyntaxError as exc:
        raise _fail(path, str(exc)) from None


def _template(t: object, path: str) -> None:
    if isinstance(t, dict):
        for k, v in t.items():
            if k.endswith(".$"):
                if not isinstance(v, str):
                    raise _fail(f"{path}.{k}", "a key ending in '.$' needs a path or an "
                                "intrinsic function as its value")
                if is_intrinsic(v):
                    try:
                        parse(v)
                    except IntrinsicSyntaxError as exc:
                        raise _fail(f"{path}.{k}", str(exc)) from None
                else:
                    _path(v, f"{path}.{k}", reference=False)
            else:
                _template(v, f"{path}.{k}")
    elif isinstance(t, list):
        for i, v in enumerate(t):
            _template(v, f"{path}[{i}]")


def _state(state: object, path: str, states: dict[str, Any], count: list[int]) -> list[str]:
    if not isinstance(state, dict):
        raise _fail(path, "must be a JSON object with a Type")
    kind = state.get("Type")
    if kind not in FIELDS:
        raise _fail(f"{path}.Type", f"must be one of {', '.join(FIELDS)}, got {_js(kind)}")
    _unknown(state, FIELDS[kind], path)
    if "Comment" in state and not isinstance(state["Comment"], str):
        raise _fail(f"{path}.Comment", f"must be a string, got {_js(state['Comment'])}")
    for f in ("InputPath", "OutputPath"):
        if f in state:
            _path(state[f], f"{path}.{f}", reference=False, nullable=True)
    if "ResultPath" in state:
        _path(state["ResultPath"], f"{path}.ResultPath", reference=True, nullable=True)
        if isinstance(state["ResultPath"], str) and state["ResultPath"].startswith("$$"):
            raise _fail(f"{path}.ResultPath", "cannot write into the context object '$$'")
    for f in ("Parameters", "ResultSelector", "ItemSelector"):
        if f in state:
            if not isinstance(state[f], dict):
                raise _fail(f"{path}.{f}", "must be a JSON object (a payload template)")
            _template(state[f], f"{path}.{f}")
    nexts: list[str] = []
    if "Next" in FIELDS[kind]:
        has_next, end = "Next" in state, state.get("End")
        if "End" in state and not isinstance(end, bool):
            raise _fail(f"{path}.End", f"must be true or false, got {_js(end)}")
        if has_next and end:
            raise _fail(path, "has both Next and End: true; keep one")
        if not has_next and not end:
            raise _fail(path, "needs Next (the state that follows) or \"End\": true")
        if has_next:
            nexts.append(_target(state["Next"], f"{path}.Next", states))
    if kind == "Task":
        res = state.get("Resource")
        if not isinstance(res, str) or not NAME_RE.match(res) or len(res) > 63:
            raise _fail(f"{path}.Resource", "must be the name of an allinone function "
                        f"(a DNS-1123 label), got {_js(res)}")
        if "TimeoutSeconds" in state and "TimeoutSecondsPath" in state:
            raise _fail(path, "has both TimeoutSeconds and TimeoutSecondsPath; keep one")
        if "TimeoutSeconds" in state:
            _positive_int(state["TimeoutSeconds"], f"{path}.TimeoutSeconds", 1, 99999999)
        if "TimeoutSecondsPath" in state:
            _path(state["TimeoutSecondsPath"], f"{path}.TimeoutSecondsPath", reference=True)
    elif kind == "Choice":
        nexts.extend(_choices(state, path, states))
    elif kind == "Wait":
        given = [f for f in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath")
                 if f in state]
        if len(given) != 1:
            raise _fail(path, "a Wait state needs exactly one of Seconds, SecondsPath, "
                        f"Timestamp, TimestampPath (has {given or 'none'})")
        f = given[0]
        if f == "Seconds":
            _positive_int(state[f], f"{path}.Seconds", 0, 99999999)
        elif f == "Timestamp":
            if choice.parse_timestamp(state[f]) is None:
                raise _fail(f"{path}.Timestamp", "must be an RFC 3339 timestamp with a zone, "
                            f"such as 2026-01-02T03:04:05Z, got {_js(state[f])}")
        else:
            _path(state[f], f"{path}.{f}", reference=True)
    elif kind == "Fail":
        for f in ("Error", "Cause"):
            if f in state and f + "Path" in state:
                raise _fail(path, f"has both {f} and {f}Path; keep one")
            if f in state and not isinstance(state[f], str):
                raise _fail(f"{path}.{f}", f"must be a string, got {_js(state[f])}")
            if f + "Path" in state:
                v = state[f + "Path"]
                if is_intrinsic(v):
                    try:
                        parse(v)
                    except IntrinsicSyntaxError as exc:
                        raise _fail(f"{path}.{f}Path", str(exc)) from None
                else:
                    _path(v, f"{path}.{f}Path", reference=True)
    elif kind == "Parallel":
        branches = state.get("Branches")
        if not isinstance(branches, list) or not branches:
            raise _fail(f"{path}.Branches", "must be a non-empty array of state machines")
        for i, b in enumerate(branches):
            if not isinstance(b, dict):
                raise _fail(f"{path}.Branches[{i}]", "must be an object with StartAt and States")
            _machine(b, f"{path}.Branches[{i}].", _BRANCH, count)
    elif kind == "Map":
        if ("ItemProcessor" in state) == ("Iterator" in state):
            raise _fail(path, "a Map state needs exactly one of ItemProcessor or Iterator")
        if "ItemSelector" in state and "Parameters" in state:
            raise _fail(path, "has both ItemSelector and Parameters; keep ItemSelector")
        field = "ItemProcessor" if "ItemProcessor" in state else "Iterator"
        proc = state[field]
        if not isinstance(proc, dict):
            raise _fail(f"{path}.{field}", "must be an object with StartAt and States")
        cfg = proc.get("ProcessorConfig", {"Mode": "INLINE"})
        if not isinstance(cfg, dict) or cfg.get("Mode", "INLINE") != "INLINE" or \
                set(cfg) - {"Mode"}:
            raise _fail(f"{path}.{field}.ProcessorConfig", 'only {"Mode": "INLINE"} is '
                        "supported")
        _machine(proc, f"{path}.{field}.", _PROCESSOR if field == "ItemProcessor" else _BRANCH,
                 count)
        if "ItemsPath" in state:
            _path(state["ItemsPath"], f"{path}.ItemsPath", reference=True)
        if "MaxConcurrency" in state:
            _positive_int(state["MaxConcurrency"], f"{path}.MaxConcurrency", 0, 10000)
    if "Retry" in state:
        _retriers(state["Retry"], f"{path}.Retry")
    if "Catch" in state:
        nexts.extend(_catchers(state["Catch"], f"{path}.Catch", states))
    return nexts


def _error_equals(v: object, path: str, last: bool) -> None:
    if not isinstance(v, list) or not v or not all(isinstance(e, str) and e for e in v):
        raise _fail(path, "must be a non-empty array of error names such as "
                    '["States.ALL"]')
    if ALL in v and (len(v) != 1 or not last):
        raise _fail(path, "States.ALL must appear alone, in the last retrier or catcher")


def _retriers(retry: object, path: str) -> None:
    if not isinstance(retry, list):
        raise _fail(path, "must be an array of retriers")
    for i, r in enumerate(retry):
        p = f"{path}[{i}]"
        if not isinstance(r, dict):
            raise _fail(p, "must be an object with ErrorEquals")
        _unknown(r, _RETRY, p)
        _error_equals(r.get("ErrorEquals"), f"{p}.ErrorEquals", i == len(retry) - 1)
        if "IntervalSeconds" in r:
            _positive_int(r["IntervalSeconds"], f"{p}.IntervalSeconds", 1, 99999999)
        if "MaxAttempts" in r:
            _positive_int(r["MaxAttempts"], f"{p}.MaxAttempts", 0, 99999999)
        if "BackoffRate" in r:
            _number(r["BackoffRate"], f"{p}.BackoffRate", 1.0, 1e6)
        if "MaxDelaySeconds" in r:
            _positive_int(r["MaxDelaySeconds"], f"{p}.MaxDelaySeconds", 1, 31622400)
        if r.get("JitterStrategy", "NONE") not in ("NONE", "FULL"):
            raise _fail(f"{p}.JitterStrategy", "must be NONE or FULL")


def _catchers(catch: object, path: str, states: dict[str, Any]) -> list[str]:
    if not isinstance(catch, list):
        raise _fail(path, "must be an array of catchers")
    out = []
    for i, c in enumerate(catch):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            raise _fail(p, "must be an object with ErrorEquals and Next")
        _unknown(c, _CATCH, p)
        _error_equals(c.get("ErrorEquals"), f"{p}.ErrorEquals", i == len(catch) - 1)
        out.append(_target(c.get("Next"), f"{p}.Next", states))
        if "ResultPath" in c:
            _path(c["ResultPath"], f"{p}.ResultPath", reference=True, nullable=True)
    return out


def _choices(state: dict[str, Any], path: str, states: dict[str, Any]) -> list[str]:
    rules = state.get("Choices")
    if not isinstance(rules, list) or not rules:
        raise _fail(f"{path}.Choices", "must be a non-empty array of rules")
    out = []
    for i, rule in enumerate(rules):
        p = f"{path}.Choices[{i}]"
        _rule(rule, p, top=True)
        out.append(_target(rule["Next"], f"{p}.Next", states))
    if "Default" in state:
        out.append(_target(state["Default"], f"{path}.Default", states))
    return out


def _rule(rule: object, path: str, top: bool) -> None:
    if not isinstance(rule, dict):
        raise _fail(path, "must be a rule object")
    if top and "Next" not in rule:
        raise _fail(path, "a top-level choice rule needs Next")
    if not top and "Next" in rule:
        raise _fail(f"{path}.Next", "only top-level choice rules have Next")
    op = choice.operator_of(rule)
    if op is None:
        raise _fail(path, "needs exactly one operator (StringEquals, NumericLessThan, "
                    "IsPresent, And, Or, Not, ...)")
    allowed = {op, "Next", "Comment"} | ({"Variable"} if op not in ("And", "Or", "Not")
                                         else set())
    _unknown(rule, allowed, path)
    if op in ("And", "Or"):
        subs = rule[op]
        if not isinstance(subs, list) or not subs:
            raise _fail(f"{path}.{op}", "must be a non-empty array of rules")
        for i, s in enumerate(subs):
            _rule(s, f"{path}.{op}[{i}]", top=False)
        return
    if op == "Not":
        _rule(rule[op], f"{path}.Not", top=False)
        return
    if "Variable" not in rule:
        raise _fail(path, f"{op} needs a Variable (a path such as $.value)")
    _path(rule["Variable"], f"{path}.Variable", reference=False)
    value = rule[op]
    if op.endswith("Path"):
        _path(value, f"{path}.{op}", reference=False)
    elif op in choice.TYPE_TESTS or op == "IsPresent" or op.startswith("Boolean"):
        if not isinstance(value, bool):
            raise _fail(f"{path}.{op}", f"must be true or false, got {_js(value)}")
    elif op.startswith("Numeric"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(f"{path}.{op}", f"must be a number, got {_js(value)}")
    elif op.startswith("Timestamp"):
        if choice.parse_timestamp(value) is None:
            raise _fail(f"{path}.{op}", f"must be an RFC 3339 timestamp, got {_js(value)}")
    elif not isinstance(value, str):
        raise _fail(f"{path}.{op}", f"must be a string, got {_js(value)}")
