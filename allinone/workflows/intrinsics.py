"""Intrinsic functions of ASL (``States.Format('{} x', $.a)``) as ``.$`` values (pure).

Grammar: ``States.Name(arg, ...)`` where an argument is a string in single quotes
(``\\'``, ``\\{``, ``\\}``, ``\\\\`` escape), a number, ``true``/``false``/``null``, a path
(``$.a``, ``$$.Execution.Id``) or a nested intrinsic call. :func:`parse` runs at
definition time (so a typo is a 400 naming the field); :func:`evaluate` at run time,
where a bad argument is ``States.IntrinsicFailure``.

Supported: Format, StringToJson, JsonToString, Array, ArrayLength, ArrayContains,
ArrayGetItem, ArrayRange, ArrayUnique, ArrayPartition, MathAdd, MathRandom, StringSplit,
JsonMerge, Base64Encode, Base64Decode, Hash and UUID.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

from allinone.workflows.errors import INTRINSIC_FAILURE, StatesError
from allinone.workflows.paths import PathSyntaxError, check_path, select

_NAME = re.compile(r"States\.[A-Za-z0-9]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


class IntrinsicSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Path:
    expr: str


@dataclass(frozen=True)
class Literal:
    value: Any


def is_intrinsic(value: object) -> bool:
    return isinstance(value, str) and value.startswith("States.")


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Call:
    call, pos = _call(text, 0)
    if text[pos:].strip():
        raise IntrinsicSyntaxError(f"{text!r}: unexpected {text[pos:]!r} after the call")
    return call


def _call(text: str, pos: int) -> tuple[Call, int]:
    m = _NAME.match(text, pos)
    if m is None:
        raise IntrinsicSyntaxError(f"{text!r}: expected an intrinsic such as States.Format(...)")
    name = m.group(0)
    if name not in FUNCTIONS:
        raise IntrinsicSyntaxError(f"{text!r}: unknown intrinsic {name}; known: "
                                   f"{', '.join(sorted(FUNCTIONS))}")
    pos = _skip(text, m.end())
    if pos >= len(text) or text[pos] != "(":
        raise IntrinsicSyntaxError(f"{text!r}: expected '(' after {name}")
    pos = _skip(text, pos + 1)
    args: list[Any] = []
    if pos < len(text) and text[pos] == ")":
        return Call(name, ()), pos + 1
    while True:
        arg, pos = _arg(text, pos)
        args.append(arg)
        pos = _skip(text, pos)
        if pos >= len(text):
            raise IntrinsicSyntaxError(f"{text!r}: missing ')'")
        if text[pos] == ")":
            return Call(name, tuple(args)), pos + 1
        if text[pos] != ",":
            raise IntrinsicSyntaxError(f"{text!r}: expected ',' or ')' at {text[pos:]!r}")
        pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    return pos


def _arg(text: str, pos: int) -> tuple[Any, int]:
    if text.startswith("States.", pos):
        return _call(text, pos)
    if pos < len(text) and text[pos] == "'":
        out, pos = [], pos + 1
        while pos < len(text):
            c = text[pos]
            if c == "\\" and pos + 1 < len(text):
                out.append(text[pos:pos + 2] if text[pos + 1] in "{}" else text[pos + 1])
                pos += 2
            elif c == "'":
                return Literal("".join(out)), pos + 1
            else:
                out.append(c)
                pos += 1
        raise IntrinsicSyntaxError(f"{text!r}: unterminated string")
    if pos < len(text) and text[pos] == "$":
        depth, quote, end = 0, "", pos
        while end < len(text):
            c = text[end]
            if quote:
                quote = "" if c == quote else quote
            elif c in "'\"":
                quote = c
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
            elif depth == 0 and c in ",)":
                break
            end += 1
        expr = text[pos:end].strip()
        try:
            check_path(expr, reference=False)
        except PathSyntaxError as exc:
            raise IntrinsicSyntaxError(f"{text!r}: {exc}") from None
        return Path(expr), end
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, pos):
            return Literal(value), pos + len(word)
    m = _NUMBER.match(text, pos)
    if m is not None:
        s = m.group(0)
        return Literal(float(s) if any(c in s for c in ".eE") else int(s)), m.end()
    raise IntrinsicSyntaxError(f"{text!r}: cannot read an argument at {text[pos:]!r}")


def evaluate(text: str, data: Any, ctx: Any) -> Any:
    return _eval(parse(text), data, ctx)


def _eval(node: Any, data: Any, ctx: Any) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Path):
        return select(node.expr, data, ctx, node.expr)
    args = [_eval(a, data, ctx) for a in node.args]
    try:
        return FUNCTIONS[node.name](*args)
    except StatesError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, json.JSONDecodeError) as exc:
        raise StatesError(INTRINSIC_FAILURE, f"{node.name}: {exc}") from None


def _fail(msg: str) -> StatesError:
    return StatesError(INTRINSIC_FAILURE, msg)


def _fmt(template: str, *args: Any) -> str:
    if not isinstance(template, str):
        raise _fail("States.Format: the first argument must be a string")
    parts = re.split(r"(?<!\\)\{\}", template)
    if len(parts) - 1 != len(args):
        raise _fail(f"States.Format: the template has {len(parts) - 1} placeholder(s) but "
                    f"{len(args)} argument(s) were given")
    out = [parts[0]]
    for arg, part in zip(args, parts[1:], strict=True):
        if isinstance(arg, (dict, list)):
            raise _fail("States.Format: arguments must be strings, numbers, booleans or null")
        out.append(json.dumps(arg) if arg is None or isinstance(arg, bool) else str(arg))
        out.append(part)
    return "".join(out).replace("\\{", "{").replace("\\}", "}")


def _number(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise _fail(f"{name}: expected an integer, got {json.dumps(v)}")
    return int(v)


def _array(name: str, v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(f"{name}: expected an array, got {json.dumps(v)[:100]}")
    return v


def _string(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise _fail(f"{name}: expected a string, got {json.dumps(v)[:100]}")
    return v


def _range(start: Any, end: Any, step: Any) -> list[int]:
    a, b, s = (_number("States.ArrayRange", x) for x in (start, end, step))
    if s == 0:
        raise _fail("States.ArrayRange: step must not be 0")
    out = list(range(a, b + (1 if s > 0 else -1), s))
    if len(out) > 1000:
        raise _fail("States.ArrayRange: at most 1000 elements")
    return out


def _partition(arr: Any, size: Any) -> list[list[Any]]:
    items, n = _array("States.ArrayPartition", arr), _number("States.ArrayPartition", size)
    if n <= 0:
        raise _fail("States.ArrayPartition: the chunk size must be positive")
    return [items[i:i + n] for i in range(0, len(items), n)]


def _unique(arr: Any) -> list[Any]:
    out: list[Any] = []
    for v in _array("States.ArrayUnique", arr):
        if v not in out:
            out.append(v)
    return out


def _merge(a: Any, b: Any, deep: Any) -> dict[str, Any]:
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise _fail("States.JsonMerge: both arguments must be JSON objects")
    if deep is not False:
        raise _fail("States.JsonMerge: only shallow merges (false) are supported")
    return {**a, **b}


def _hash(data: Any, algorithm: Any) -> str:
    algos = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384",
             "SHA-512": "sha512"}
    if algorithm not in algos:
        raise _fail(f"States.Hash: algorithm must be one of {sorted(algos)}")
    text = data if isinstance(data, str) else json.dumps(data)
    return hashlib.new(algos[algorithm], text.encode()).hexdigest()


def _add(a: Any, b: Any) -> int | float:
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(f"States.MathAdd: expected numbers, got {json.dumps(v)}")
    return a + b  # type: ignore[no-any-return]


FUNCTIONS: dict[str, Any] = {
    "States.Format": _fmt,
    "States.StringToJson": lambda s: json.loads(_string("States.StringToJson", s)),
    "States.JsonToString": lambda v: json.dumps(v, separators=(",", ":")),
    "States.Array": lambda *a: list(a),
    "States.ArrayLength": lambda a: len(_array("States.ArrayLength", a)),
    "States.ArrayContains": lambda a, v: v in _array("States.ArrayContains", a),
    "States.ArrayGetItem": lambda a, i: _array("States.ArrayGetItem", a)[
        _number("States.ArrayGetItem", i)],
    "States.ArrayRange": _range,
    "States.ArrayPartition": _partition,
    "States.ArrayUnique": _unique,
    "States.MathAdd": _add,
    "States.MathRandom": lambda a, b: random.randint(_number("States.MathRandom", a),
                                                     _number("States.MathRandom", b) - 1),
    "States.StringSplit": lambda s, d: [p for p in re.split(
        "|".join(map(re.escape, _string("States.StringSplit", d))) or "$^",
        _string("States.StringSplit", s)) if p],
    "States.JsonMerge": _merge,
    "States.Base64Encode": lambda s: base64.b64encode(
        _string("States.Base64Encode", s).encode()).decode(),
    "States.Base64Decode": lambda s: base64.b64decode(
        _string("States.Base64Decode", s), validate=True).decode(),
    "States.Hash": _hash,
    "States.UUID": lambda: str(uuid.uuid4()),
}
