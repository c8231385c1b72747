"""Paths and payload templates of the Amazon States Language (pure).

ASL has three kinds of path, all JSONPath evaluated by ``jsonpath-ng``:

- *paths* (``$.items[*].id``) may select several values: used by ``.$`` keys of a
  payload template and by ``ItemsPath``;
- *reference paths* (``$.a.b``, ``$.list[0]``, ``$['a b']``) select one node and are
  the only kind allowed in ``InputPath``, ``OutputPath``, ``ResultPath``, Choice
  ``Variable`` and the ``...Path`` fields; no wildcard, filter, slice or union;
- ``$$``-paths address the context object instead of the input.

Every failure is a :class:`StatesError` ``States.Runtime`` whose cause names the path
and the field, as Step Functions reports it. Parsed paths are cached: a definition's
paths are parsed once per process, not once per state entered.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.jsonpath import JSONPath
from jsonpath_ng.parser import parse as _jp_parse

from allinone.workflows.errors import RUNTIME, StatesError

# What makes a path select possibly more than one node.
_INDEFINITE = re.compile(r"\*|\.\.|\?\(|\[[^\]'\"]*[:,][^\]'\"]*\]")


class PathSyntaxError(ValueError):
    """A path that does not parse, or that is not a reference path where one is needed."""


@functools.lru_cache(maxsize=4096)
def _compile(expr: str) -> JSONPath:
    try:
        return _jp_parse(expr)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise PathSyntaxError(f"{expr!r} is not a valid JSONPath ({exc})") from None


def check_path(expr: object, *, reference: bool, context: bool = True) -> str:
    """Validate a path at definition time; returns it. Raises :class:`PathSyntaxError`."""
    if not isinstance(expr, str) or not expr.startswith("$"):
        raise PathSyntaxError(f"{expr!r} is not a path: paths start with '$'")
    if expr.startswith("$$"):
        if not context:
            raise PathSyntaxError(f"{expr!r}: the context object '$$' is not allowed here")
        body = expr[1:]
    else:
        body = expr
    if reference and _INDEFINITE.search(body):
        raise PathSyntaxError(f"{expr!r} is not a reference path: wildcards, filters, slices "
                              "and unions may select several nodes; name one node like $.a.b")
    _compile(body)
    return expr


def is_definite(expr: str) -> bool:
    return _INDEFINITE.search(expr) is None


def select(expr: str, data: Any, ctx: Any, field: str) -> Any:
    """The value at ``expr`` in ``data`` (or ``ctx`` for ``$$``); States.Runtime when absent.

    A path that may select several nodes returns the list of what it selected.
    """
    found, value = lookup(expr, data, ctx)
    if not found:
        raise StatesError(RUNTIME, f"The JSONPath {expr!r} specified for the field {field!r} "
                          "could not be found in the input")
    return value


def lookup(expr: str, data: Any, ctx: Any) -> tuple[bool, Any]:
    """(found, value) of ``expr`` in ``data`` (or ``ctx`` for ``$$``)."""
    target = data
    if expr.startswith("$$"):
        expr, target = expr[1:], ctx
    if expr == "$":
        return True, target
    matches = [m.value for m in _compile(expr).find(target)]
    if is_definite(expr):
        return (True, matches[0]) if matches else (False, None)
    return True, matches


def apply_input_path(expr: str | None, data: Any, ctx: Any) -> Any:
    """``InputPath``/``OutputPath``: absent is ``$``; ``null`` gives ``{}``."""
    if expr is None:
        return {}
    return select(expr, data, ctx, "InputPath")


def apply_result_path(expr: str | None, state_input: Any, result: Any) -> Any:
    """``ResultPath``: ``$`` replaces, ``null`` discards the result, ``$.a.b`` merges it in.

    Intermediate objects are created; a path through a non-object is States.Runtime.
    """
    if expr is None:
        return state_input
    if expr == "$":
        return result
    out = copy.deepcopy(state_input)
    if not isinstance(out, dict):
        raise StatesError(RUNTIME, f"Unable to apply ResultPath {expr!r}: the state input is "
                          "not a JSON object")
    node: Any = out
    keys = reference_keys(expr)
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(key, int):
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                raise StatesError(RUNTIME, f"Unable to apply ResultPath {expr!r}: no element "
                                  f"{key} to replace")
            if last:
                node[key] = result
            else:
                node = node[key]
            continue
        if not isinstance(node, dict):
            raise StatesError(RUNTIME, f"Unable to apply ResultPath {expr!r}: {key!r} is inside "
                              "a value that is not a JSON object")
        if last:
            node[key] = result
        else:
            if key not in node:
                node[key] = {}
            node = node[key]
    return out


_SEGMENT = re.compile(r"\.([^.\[\]]+)|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]"
                      r"|\[\s*(-?\d+)\s*\]")


@functools.lru_cache(maxsize=1024)
def reference_keys(expr: str) -> tuple[str | int, ...]:
    """``$.a['b c'][0]`` -> ``('a', 'b c', 0)``; raises PathSyntaxError otherwise."""
    if not expr.startswith("$") or expr.startswith("$$"):
        raise PathSyntaxError(f"{expr!r} is not a reference path into the input")
    pos, keys = 1, []
    while pos < len(expr):
        m = _SEGMENT.match(expr, pos)
        if m is None:
            raise PathSyntaxError(f"{expr!r} is not a reference path (at {expr[pos:]!r})")
        if m.group(1) is not None:
            keys.append(m.group(1))
        elif m.group(2) is not None:
            keys.append(re.sub(r"\\(.)", r"\1", m.group(2)))
        elif m.group(3) is not None:
            keys.append(m.group(3))
        else:
            keys.append(int(m.group(4)))
        pos = m.end()
    return tuple(keys)


def render_template(template: Any, data: Any, ctx: Any, field: str) -> Any:
    """A payload template (``Parameters``, ``ResultSelector``, ``ItemSelector``).

    Keys ending in ``.$`` take a path (or an intrinsic function call) evaluated on
    ``data``/``ctx``, and lose the suffix; everything else is copied as is.
    """
    from allinone.workflows.intrinsics import evaluate, is_intrinsic

    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                name = key[:-2]
                if is_intrinsic(value):
                    out[name] = evaluate(value, data, ctx)
                else:
                    out[name] = copy.deepcopy(select(value, data, ctx, f"{field}.{key}"))
            else:
                out[key] = render_template(value, data, ctx, f"{field}.{key}")
        return out
    if isinstance(template, list):
        return [render_template(v, data, ctx, field) for v in template]
    return copy.deepcopy(template)
