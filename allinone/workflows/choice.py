"""Choice rules of ASL (pure): which rule of a ``Choice`` state matches an input.

A comparison whose ``Variable`` has the wrong type is false (a string is never
``NumericEquals`` anything); a ``Variable`` that is absent is ``States.Runtime`` except
under ``IsPresent``, as in Step Functions. ``...Path`` variants read the right-hand side
from the input; when that side is absent it is ``States.Runtime`` too.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from allinone.workflows.errors import RUNTIME, StatesError
from allinone.workflows.paths import lookup

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq, "LessThan": operator.lt, "GreaterThan": operator.gt,
    "LessThanEquals": operator.le, "GreaterThanEquals": operator.ge,
}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_timestamp(v: object) -> datetime | None:
    """An RFC 3339 timestamp with a zone (``2026-01-02T03:04:05Z``), else None."""
    if not isinstance(v, str) or "T" not in v:
        return None
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


# kind -> (is the value of that kind, how it is compared)
_KINDS: dict[str, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    "String": (lambda v: isinstance(v, str), lambda v: v),
    "Numeric": (_is_number, lambda v: v),
    "Boolean": (lambda v: isinstance(v, bool), lambda v: v),
    "Timestamp": (lambda v: parse_timestamp(v) is not None, parse_timestamp),
}

COMPARISONS: dict[str, tuple[str, str, bool]] = {}
for _kind in _KINDS:
    for _op in (_CMP if _kind not in ("Boolean",) else {"Equals": operator.eq}):
        COMPARISONS[f"{_kind}{_op}"] = (_kind, _op, False)
        COMPARISONS[f"{_kind}{_op}Path"] = (_kind, _op, True)

TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsNumeric": _is_number,
    "IsString": lambda v: isinstance(v, str),
    "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": lambda v: parse_timestamp(v) is not None,
}

OPERATORS = frozenset(COMPARISONS) | frozenset(TYPE_TESTS) | {"IsPresent", "StringMatches"}


def operator_of(rule: dict[str, Any]) -> str | None:
    ops = [k for k in rule if k in OPERATORS or k in ("And", "Or", "Not")]
    return ops[0] if len(ops) == 1 else None


def _wildcard(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def evaluate(rule: dict[str, Any], data: Any, ctx: Any) -> bool:
    if "And" in rule:
        return all(evaluate(r, data, ctx) for r in rule["And"])
    if "Or" in rule:
        return any(evaluate(r, data, ctx) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate(rule["Not"], data, ctx)
    op = operator_of(rule)
    var = rule["Variable"]
    found, value = lookup(var, data, ctx)
    if op == "IsPresent":
        return found == bool(rule[op])
    if not found:
        raise StatesError(RUNTIME, f"Invalid path {var!r}: the choice state's Variable was "
                          "not found in the input")
    if op in TYPE_TESTS:
        return TYPE_TESTS[op](value) == bool(rule[op])
    if op == "StringMatches":
        return isinstance(value, str) and _wildcard(rule[op]).fullmatch(value) is not None
    assert op is not None
    kind, cmp, by_path = COMPARISONS[op]
    other = rule[op]
    if by_path:
        found, other = lookup(other, data, ctx)
        if not found:
            raise StatesError(RUNTIME, f"Invalid path {rule[op]!r} in {op}: not found in the "
                              "input")
    is_kind, key = _KINDS[kind]
    if not is_kind(value) or not is_kind(other):
        return False
    return _CMP[cmp](key(value), key(other))


def describe(rule: dict[str, Any]) -> str:
    """A short human rendering of a rule (for graph edge labels)."""
    if "And" in rule:
        return " and ".join(f"({describe(r)})" for r in rule["And"])
    if "Or" in rule:
        return " or ".join(f"({describe(r)})" for r in rule["Or"])
    if "Not" in rule:
        return f"not ({describe(rule['Not'])})"
    op = operator_of(rule) or "?"
    value = rule.get(op)
    return f"{rule.get('Variable', '?')} {op} {value if isinstance(value, str) else repr(value)}"
