"""Names, handlers and env of a Function spec: full matches and size bounds (issue 7)."""

from __future__ import annotations

import pytest

from allinone import objects
from allinone.builder.validate import validate_source
from allinone.objects import (
    MAX_ENV_TOTAL_BYTES,
    MAX_ENV_VALUE_BYTES,
    ValidationError,
    normalize_spec,
    validate_name,
)


@pytest.mark.parametrize("name", ["a", "add", "a-1", "0x", "a" * 63])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(("name", "words"), [
    ("nl2\n", ["DNS-1123"]),  # "$" matched before a final newline: created, never deleted
    ("\nnl", ["DNS-1123"]),
    ("a\n\n", ["DNS-1123"]),
    ("Add", ["DNS-1123"]),
    ("-a", ["DNS-1123"]),
    ("a-", ["DNS-1123"]),
    ("a_b", ["DNS-1123"]),
    ("a" * 64, ["64 characters", "at most 63"]),
    ("", ["required"]),
])
def test_bad_names(name: str, words: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name(name)
    for word in words:
        assert word in str(info.value)


def test_long_name_is_not_echoed_whole() -> None:
    with pytest.raises(ValidationError) as info:
        validate_name("a" * 100_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("handler", ["run", "mod.fn", "pkg.mod.fn", "_x", "A9"])
def test_good_handlers(handler: str) -> None:
    assert normalize_spec({"handler": handler})["handler"] == handler


@pytest.mark.parametrize("handler", ["run\n", "mod.fn\n", "\nrun", "mod..fn", ".run", "run.",
                                     "9run", "run()", "a-b", ""])
def test_bad_handlers_in_spec_and_in_validate_source(handler: str) -> None:
    with pytest.raises(ValidationError, match=r"spec\.handler"):
        normalize_spec({"handler": handler})
    with pytest.raises(ValidationError, match="is not a Python name"):
        validate_source("f.py", b"def run(): pass\n", handler, max_upload=1 << 20,
                        max_unzipped=1 << 20)


def test_handler_rule_lives_in_objects() -> None:
    from allinone.builder import validate
    assert not hasattr(validate, "_HANDLER_RE")
    assert objects.HANDLER_RE.fullmatch("a.b") and not objects.HANDLER_RE.fullmatch("a.b\n")


ENV_CASES = [
    # (env, words of the error, or None when accepted)
    ({"KEY": "v", "_k2": ""}, None),
    ({"A": "x" * MAX_ENV_VALUE_BYTES}, None),
    ({"KEY\n": "v"}, ["KEY\\n", "not a valid environment variable name"]),
    ({"1KEY": "v"}, ["not a valid environment variable name"]),
    ({"A=B": "v"}, ["not a valid environment variable name"]),
    ({"": "v"}, ["not a valid environment variable name"]),
    ({"PYTHONPATH": "/x"}, ["reserved"]),
    ({"KEY": 1}, ["must be a string"]),
    ({"KEY": "a\0b"}, ["NUL"]),
    ({"KEY": "\ud800"}, ["not valid Unicode"]),
    ({"BIG": "x" * (MAX_ENV_VALUE_BYTES + 1)}, ["spec.env.BIG", str(MAX_ENV_VALUE_BYTES),
                                                "32 KiB"]),
    ({"BIG": "é" * (MAX_ENV_VALUE_BYTES // 2 + 1)}, ["spec.env.BIG", "bytes"]),
    ({f"K{i}": "x" * 20_000 for i in range(4)}, ["spec.env is", str(MAX_ENV_TOTAL_BYTES),
                                                 "64 KiB"]),
    ({"HUGE": "x" * (2 * 1024 * 1024)}, ["spec.env.HUGE"]),
]


@pytest.mark.parametrize(("env", "words"), ENV_CASES, ids=range(len(ENV_CASES)))
def test_env(env: dict[str, object], words: list[str] | None) -> None:
    if words is None:
        assert normalize_spec({"env": env})["env"] == env
        return
    with pytest.raises(ValidationError) as info:
        normalize_spec({"env": env})
    for word in words:
        assert word in str(info.value), str(info.value)
