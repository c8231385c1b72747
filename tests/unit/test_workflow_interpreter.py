"""The ASL interpreter over a fake invoker and a manual clock: a table of definitions,
inputs and expected outcomes, then the cases that need more than one assertion
(retry timing, Map concurrency, Task timeouts, history events)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from allinone.clock import ManualClock
from allinone.workflows.interpreter import Interpreter, Outcome, Resume
from allinone.workflows.invoker import FakeInvoker
from allinone.workflows.validate import validate


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.transitions: list[tuple[str, Any, float | None]] = []

    async def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def transition(self, state: str, state_input: Any, wait_until: float | None) -> None:
        self.transitions.append((state, state_input, wait_until))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def _raise(exc: Exception) -> Any:
    raise exc


FUNCTIONS: dict[str, Any] = {
    "add": lambda a, b: a + b,
    "echo": lambda **kw: kw,
    "double": lambda x: x * 2,
    "boom": lambda **kw: _raise(ValueError("bad value")),
    "keyerr": lambda **kw: _raise(KeyError("k")),
    "bare": lambda **kw: _raise(RuntimeError()),
    "listy": lambda **kw: [1, 2, 3],
}


def machine(states: dict[str, Any], start: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"StartAt": start or next(iter(states)), "States": states, **extra}


def task(resource: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("End", True) if "Next" not in fields else None
    return {"Type": "Task", "Resource": resource, **fields}


def pass_(**fields: Any) -> dict[str, Any]:
    fields.setdefault("End", True) if "Next" not in fields else None
    return {"Type": "Pass", **fields}


def choice_machine(rule: dict[str, Any]) -> dict[str, Any]:
    return machine({
        "c": {"Type": "Choice", "Choices": [{**rule, "Next": "yes"}], "Default": "no"},
        "yes": pass_(Result="yes"),
        "no": pass_(Result="no"),
    })


async def run(definition: dict[str, Any], data: Any, functions: dict[str, Any] | None = None,
              clock: ManualClock | None = None, **kw: Any) -> tuple[Outcome, ListSink]:
    validate(definition)
    sink = ListSink()
    clock = clock or ManualClock()
    interp = Interpreter(definition, FakeInvoker(functions or FUNCTIONS, clock), clock, sink,
                         execution_id="exec-1", workflow="wf")
    return await interp.run(data, **kw), sink


OK = "SUCCEEDED"
TS = "2026-01-02T03:04:05Z"

# (id, definition, input, expected output | ("error", name, cause substring))
CASES: list[tuple[str, dict[str, Any], Any, Any]] = [
    # -- Pass and the path fields
    ("pass-identity", machine({"p": pass_()}), {"a": 1}, {"a": 1}),
    ("pass-result", machine({"p": pass_(Result={"x": 1})}), {"a": 1}, {"x": 1}),
    ("pass-resultpath-merge", machine({"p": pass_(Result=5, ResultPath="$.r")}), {"a": 1},
     {"a": 1, "r": 5}),
    ("pass-resultpath-nested", machine({"p": pass_(Result=5, ResultPath="$.x.y.z")}),
     {"x": {"k": 0}}, {"x": {"k": 0, "y": {"z": 5}}}),
    ("pass-resultpath-index", machine({"p": pass_(Result=9, ResultPath="$.l[1]")}),
     {"l": [1, 2]}, {"l": [1, 9]}),
    ("pass-resultpath-null", machine({"p": pass_(Result=5, ResultPath=None)}), {"a": 1},
     {"a": 1}),
    ("pass-resultpath-into-scalar", machine({"p": pass_(Result=5, ResultPath="$.a.b")}),
     {"a": 1}, ("error", "States.Runtime", "not a JSON object")),
    ("inputpath", machine({"p": pass_(InputPath="$.in")}), {"in": {"v": 2}}, {"v": 2}),
    ("inputpath-null", machine({"p": pass_(InputPath=None)}), {"in": 1}, {}),
    ("inputpath-missing", machine({"p": pass_(InputPath="$.nope")}), {"in": 1},
     ("error", "States.Runtime", "$.nope")),
    ("outputpath", machine({"p": pass_(Result={"k": {"v": 3}}, OutputPath="$.k")}), {},
     {"v": 3}),
    ("outputpath-null", machine({"p": pass_(OutputPath=None)}), {"a": 1}, {}),
    ("parameters-paths", machine({"p": pass_(Parameters={
        "static": "s", "v.$": "$.a", "all.$": "$.l[*].n", "nested": {"w.$": "$.a"}})}),
     {"a": 7, "l": [{"n": 1}, {"n": 2}]},
     {"static": "s", "v": 7, "all": [1, 2], "nested": {"w": 7}}),
    ("parameters-context", machine({"p": pass_(Parameters={
        "id.$": "$$.Execution.Id", "in.$": "$$.Execution.Input.a", "state.$": "$$.State.Name",
        "wf.$": "$$.StateMachine.Name"})}),
     {"a": 1}, {"id": "exec-1", "in": 1, "state": "p", "wf": "wf"}),
    ("parameters-missing-path", machine({"p": pass_(Parameters={"v.$": "$.zzz"})}), {},
     ("error", "States.Runtime", "Parameters.v.$")),
    ("inputpath-then-parameters-then-resultpath", machine({"p": pass_(
        InputPath="$.in", Parameters={"x.$": "$.v"}, ResultPath="$.out")}),
     {"in": {"v": 1}}, {"in": {"v": 1}, "out": {"x": 1}}),
    # -- Task
    ("task", machine({"t": task("add")}), {"a": 1, "b": 2}, 3),
    ("task-parameters-resultselector-resultpath-outputpath", machine({"t": task(
        "echo", Parameters={"x.$": "$.n", "k": "v"}, ResultSelector={"got.$": "$.x"},
        ResultPath="$.res", OutputPath="$.res")}), {"n": 4}, {"got": 4}),
    ("task-chain", machine({"t1": task("add", Next="t2", ResultPath="$.x"),
                            "t2": task("double", InputPath="$", Parameters={"x.$": "$.x"})}),
     {"a": 1, "b": 2}, 6),
    ("task-non-object-input", machine({"t": task("echo")}), [1, 2],
     ("error", "States.Runtime", "must be a JSON object")),
    ("task-function-raised", machine({"t": task("boom")}), {},
     ("error", "ValueError", "bad value")),
    ("task-raised-no-message", machine({"t": task("bare")}), {}, ("error", "RuntimeError", "")),
    ("task-missing-function", machine({"t": task("ghost")}), {},
     ("error", "States.TaskFailed", "function 'ghost' does not exist")),
    ("task-returns-list", machine({"t": task("listy")}), {}, [1, 2, 3]),
    # -- Choice: every operator, both ways
    *[(f"choice-{op}-{want}", choice_machine({"Variable": "$.v", op: rhs}), {"v": v},
       "yes" if want else "no")
      for op, rhs, v, want in [
          ("StringEquals", "a", "a", True), ("StringEquals", "a", "b", False),
          ("StringLessThan", "b", "a", True), ("StringLessThan", "a", "a", False),
          ("StringGreaterThan", "a", "b", True), ("StringGreaterThan", "b", "a", False),
          ("StringLessThanEquals", "a", "a", True), ("StringLessThanEquals", "a", "b", False),
          ("StringGreaterThanEquals", "b", "b", True),
          ("StringGreaterThanEquals", "b", "a", False),
          ("StringMatches", "log-*.txt", "log-1.txt", True),
          ("StringMatches", "log-\\*", "log-1", False),
          ("StringMatches", "log-\\*", "log-*", True),
          ("NumericEquals", 1, 1.0, True), ("NumericEquals", 1, "1", False),
          ("NumericLessThan", 2, 1, True), ("NumericLessThan", 1, 1, False),
          ("NumericGreaterThan", 1, 2, True), ("NumericGreaterThan", 2, 2, False),
          ("NumericLessThanEquals", 2, 2, True), ("NumericLessThanEquals", 2, 3, False),
          ("NumericGreaterThanEquals", 2, 2, True), ("NumericGreaterThanEquals", 2, 1, False),
          ("NumericEquals", 1, True, False),
          ("BooleanEquals", True, True, True), ("BooleanEquals", True, 1, False),
          ("TimestampEquals", TS, "2026-01-02T04:04:05+01:00", True),
          ("TimestampLessThan", TS, "2026-01-01T00:00:00Z", True),
          ("TimestampLessThan", TS, TS, False),
          ("TimestampGreaterThan", TS, "2027-01-01T00:00:00Z", True),
          ("TimestampLessThanEquals", TS, TS, True),
          ("TimestampGreaterThanEquals", TS, "2025-01-01T00:00:00Z", False),
          ("TimestampEquals", TS, "not a time", False),
          ("IsNull", True, None, True), ("IsNull", True, 0, False),
          ("IsNumeric", True, 1.5, True), ("IsNumeric", True, True, False),
          ("IsString", True, "s", True), ("IsString", False, "s", False),
          ("IsBoolean", True, False, True), ("IsBoolean", True, 0, False),
          ("IsTimestamp", True, TS, True), ("IsTimestamp", True, "2026-01-02", False),
          ("IsPresent", True, 1, True),
      ]],
    *[(f"choice-{op}-{want}", choice_machine({"Variable": "$.v", op: "$.w"}),
       {"v": v, "w": w}, "yes" if want else "no")
      for op, v, w, want in [
          ("StringEqualsPath", "a", "a", True), ("StringEqualsPath", "a", "b", False),
          ("StringLessThanPath", "a", "b", True), ("StringGreaterThanPath", "a", "b", False),
          ("StringLessThanEqualsPath", "a", "a", True),
          ("StringGreaterThanEqualsPath", "a", "b", False),
          ("NumericEqualsPath", 3, 3, True), ("NumericLessThanPath", 3, 2, False),
          ("NumericGreaterThanPath", 3, 2, True), ("NumericLessThanEqualsPath", 2, 2, True),
          ("NumericGreaterThanEqualsPath", 1, 2, False),
          ("BooleanEqualsPath", True, True, True), ("BooleanEqualsPath", True, False, False),
          ("TimestampEqualsPath", TS, TS, True),
          ("TimestampLessThanPath", TS, "2027-01-01T00:00:00Z", True),
          ("TimestampGreaterThanPath", TS, "2027-01-01T00:00:00Z", False),
          ("TimestampLessThanEqualsPath", TS, TS, True),
          ("TimestampGreaterThanEqualsPath", "2025-01-01T00:00:00Z", TS, False),
      ]],
    ("choice-IsPresent-absent", choice_machine({"Variable": "$.nope", "IsPresent": False}),
     {}, "yes"),
    ("choice-missing-variable", choice_machine({"Variable": "$.nope", "IsNull": True}), {},
     ("error", "States.Runtime", "$.nope")),
    ("choice-path-rhs-missing", choice_machine({"Variable": "$.v", "NumericEqualsPath": "$.w"}),
     {"v": 1}, ("error", "States.Runtime", "$.w")),
    ("choice-and", choice_machine({"And": [{"Variable": "$.a", "NumericGreaterThan": 0},
                                           {"Variable": "$.b", "StringEquals": "x"}]}),
     {"a": 1, "b": "x"}, "yes"),
    ("choice-and-false", choice_machine({"And": [{"Variable": "$.a", "NumericGreaterThan": 0},
                                                 {"Variable": "$.b", "StringEquals": "x"}]}),
     {"a": 1, "b": "y"}, "no"),
    ("choice-or", choice_machine({"Or": [{"Variable": "$.a", "NumericGreaterThan": 5},
                                         {"Variable": "$.b", "StringEquals": "x"}]}),
     {"a": 1, "b": "x"}, "yes"),
    ("choice-not", choice_machine({"Not": {"Variable": "$.a", "StringEquals": "x"}}),
     {"a": "y"}, "yes"),
    ("choice-context-variable", choice_machine({"Variable": "$$.Execution.Id",
                                                "StringEquals": "exec-1"}), {}, "yes"),
    ("choice-first-match-wins", machine({
        "c": {"Type": "Choice", "Choices": [
            {"Variable": "$.v", "NumericGreaterThan": 1, "Next": "one"},
            {"Variable": "$.v", "NumericGreaterThan": 0, "Next": "two"}]},
        "one": pass_(Result=1), "two": pass_(Result=2)}), {"v": 5}, 1),
    ("choice-no-match", machine({
        "c": {"Type": "Choice", "Choices": [
            {"Variable": "$.v", "NumericEquals": 1, "Next": "one"}]},
        "one": pass_()}), {"v": 2}, ("error", "States.NoChoiceMatched", "'c'")),
    ("choice-input-output-paths", machine({
        "c": {"Type": "Choice", "InputPath": "$.in", "OutputPath": "$.k",
              "Choices": [{"Variable": "$.k", "IsPresent": True, "Next": "e"}]},
        "e": {"Type": "Succeed"}}), {"in": {"k": 4}}, 4),
    # -- Succeed, Fail, Wait
    ("succeed", machine({"s": {"Type": "Succeed", "OutputPath": "$.a"}}), {"a": 1}, 1),
    ("fail", machine({"f": {"Type": "Fail", "Error": "MyError", "Cause": "because"}}), {},
     ("error", "MyError", "because")),
    ("fail-paths", machine({"f": {"Type": "Fail", "ErrorPath": "$.e",
                                  "CausePath": "States.Format('code {}', $.c)"}}),
     {"e": "E1", "c": 7}, ("error", "E1", "code 7")),
    ("wait-seconds", machine({"w": {"Type": "Wait", "Seconds": 5, "End": True}}), {"a": 1},
     {"a": 1}),
    ("wait-secondspath-bad", machine({"w": {"Type": "Wait", "SecondsPath": "$.s",
                                            "End": True}}), {"s": "x"},
     ("error", "States.Runtime", "SecondsPath")),
    # -- Parallel and Map
    ("parallel", machine({"p": {"Type": "Parallel", "End": True, "Branches": [
        machine({"a": task("add")}),
        machine({"d": task("double", Parameters={"x.$": "$.a"})})]}}),
     {"a": 2, "b": 3}, [5, 4]),
    ("parallel-branch-fails", machine({"p": {"Type": "Parallel", "End": True, "Branches": [
        machine({"a": task("add")}), machine({"b": task("boom")})]}}),
     {"a": 2, "b": 3}, ("error", "ValueError", "bad value")),
    ("parallel-resultselector", machine({"p": {
        "Type": "Parallel", "End": True, "ResultSelector": {"first.$": "$[0]"},
        "Branches": [machine({"a": pass_(Result=1)}), machine({"b": pass_(Result=2)})]}}),
     {}, {"first": 1}),
    ("map", machine({"m": {"Type": "Map", "End": True, "ItemsPath": "$.xs",
                           "ItemProcessor": machine({"d": task("double")})}}),
     {"xs": [{"x": 1}, {"x": 2}, {"x": 3}]}, [2, 4, 6]),
    ("map-iterator-parameters-context", machine({"m": {
        "Type": "Map", "End": True, "ItemsPath": "$.xs",
        "Parameters": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value", "k.$": "$.k"},
        "Iterator": machine({"p": pass_()})}}),
     {"xs": ["a", "b"], "k": 0}, [{"i": 0, "v": "a", "k": 0}, {"i": 1, "v": "b", "k": 0}]),
    ("map-itemselector-resultpath", machine({"m": {
        "Type": "Map", "End": True, "ItemsPath": "$.xs", "ResultPath": "$.out",
        "ItemSelector": {"x.$": "$$.Map.Item.Value"},
        "ItemProcessor": machine({"d": task("double")})}}),
     {"xs": [1, 2]}, {"xs": [1, 2], "out": [2, 4]}),
    ("map-empty", machine({"m": {"Type": "Map", "End": True,
                                 "ItemProcessor": machine({"d": task("double")})}}), [], []),
    ("map-not-array", machine({"m": {"Type": "Map", "End": True, "ItemsPath": "$.xs",
                                     "ItemProcessor": machine({"d": pass_()})}}), {"xs": 1},
     ("error", "States.Runtime", "must select an array")),
    ("map-iteration-fails", machine({"m": {"Type": "Map", "End": True,
                                           "ItemProcessor": machine({"b": task("boom")})}}),
     [{}, {}], ("error", "ValueError", "bad value")),
    # -- Catch
    ("catch", machine({
        "t": task("boom", Catch=[{"ErrorEquals": ["ValueError"], "Next": "h",
                                  "ResultPath": "$.err"}]),
        "h": pass_()}), {"a": 1},
     {"a": 1, "err": {"Error": "ValueError", "Cause": "bad value"}}),
    ("catch-default-resultpath", machine({
        "t": task("boom", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "h"}]),
        "h": pass_()}), {"a": 1}, {"Error": "ValueError", "Cause": "bad value"}),
    ("catch-taskfailed-matches-function-error", machine({
        "t": task("keyerr", Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "h",
                                    "ResultPath": "$.e"}]),
        "h": pass_(OutputPath="$.e.Error")}), {}, "KeyError"),
    ("catch-order-first-match", machine({
        "t": task("boom", Catch=[{"ErrorEquals": ["KeyError"], "Next": "k"},
                                 {"ErrorEquals": ["ValueError"], "Next": "v"},
                                 {"ErrorEquals": ["States.ALL"], "Next": "k"}]),
        "k": pass_(Result="k"), "v": pass_(Result="v")}), {}, "v"),
    ("catch-not-matching", machine({
        "t": task("boom", Catch=[{"ErrorEquals": ["KeyError"], "Next": "k"}]),
        "k": pass_()}), {}, ("error", "ValueError", "bad value")),
    ("catch-runtime-not-by-all", machine({
        "t": task("echo", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "k"}]),
        "k": pass_()}), "not an object", ("error", "States.Runtime", "JSON object")),
    ("catch-on-parallel", machine({
        "p": {"Type": "Parallel", "Next": "h", "Branches": [machine({"b": task("boom")})],
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "h", "ResultPath": "$.e"}]},
        "h": pass_(OutputPath="$.e.Error")}), {}, "ValueError"),
    ("catch-on-map", machine({
        "m": {"Type": "Map", "Next": "h", "ItemProcessor": machine({"b": task("boom")}),
              "Catch": [{"ErrorEquals": ["ValueError"], "Next": "h"}]},
        "h": pass_(OutputPath="$.Cause")}), [{}], "bad value"),
    ("catch-missing-function", machine({
        "t": task("ghost", Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "h"}]),
        "h": pass_(OutputPath="$.Error")}), {}, "States.TaskFailed"),
    # -- intrinsic functions
    ("intrinsics", machine({"p": pass_(Parameters={
        "f.$": "States.Format('Hello, {}! {} {}', $.name, $.n, $.b)",
        "esc.$": "States.Format('a \\{\\} {}', 'x')",
        "s2j.$": "States.StringToJson($.js)",
        "j2s.$": "States.JsonToString($.obj)",
        "arr.$": "States.Array(1, 'two', $.n, null)",
        "len.$": "States.ArrayLength($.list)",
        "sum.$": "States.MathAdd($.n, -3)",
        "nested.$": "States.ArrayLength(States.Array($.n, $.n))",
        "contains.$": "States.ArrayContains($.list, 2)",
        "item.$": "States.ArrayGetItem($.list, 1)",
        "range.$": "States.ArrayRange(1, 9, 4)",
        "parts.$": "States.ArrayPartition($.list, 2)",
        "uniq.$": "States.ArrayUnique(States.Array(1, 1, 2))",
        "split.$": "States.StringSplit('a,b,,c', ',')",
        "merge.$": "States.JsonMerge($.obj, States.StringToJson('{\"y\": 2}'), false)",
        "b64.$": "States.Base64Encode('hi')",
        "unb64.$": "States.Base64Decode('aGk=')",
        "hash.$": "States.Hash('abc', 'SHA-256')",
    })}), {"name": "Ada", "n": 5, "b": True, "js": "{\"k\": [1]}", "obj": {"x": 1},
           "list": [1, 2, 3]},
     {"f": "Hello, Ada! 5 true", "esc": "a {} x", "s2j": {"k": [1]}, "j2s": "{\"x\":1}",
      "arr": [1, "two", 5, None], "len": 3, "sum": 2, "nested": 2, "contains": True,
      "item": 2, "range": [1, 5, 9], "parts": [[1, 2], [3]], "uniq": [1, 2],
      "split": ["a", "b", "c"], "merge": {"x": 1, "y": 2}, "b64": "aGk=", "unb64": "hi",
      "hash": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}),
    ("intrinsic-format-arity", machine({"p": pass_(Parameters={
        "f.$": "States.Format('{} {}', $.a)"})}), {"a": 1},
     ("error", "States.IntrinsicFailure", "placeholder")),
    ("intrinsic-bad-json", machine({"p": pass_(Parameters={
        "f.$": "States.StringToJson($.a)"})}), {"a": "{nope"},
     ("error", "States.IntrinsicFailure", "StringToJson")),
    ("intrinsic-mathadd-type", machine({"p": pass_(Parameters={
        "f.$": "States.MathAdd($.a, 1)"})}), {"a": "1"},
     ("error", "States.IntrinsicFailure", "MathAdd")),
]


@pytest.mark.parametrize(("definition", "data", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_interpreter_table(definition: dict[str, Any], data: Any, expected: Any) -> None:
    out, sink = await run(definition, data)
    if isinstance(expected, tuple) and expected and expected[0] == "error":
        _, error, cause = expected
        assert (out.status, out.error) == ("FAILED", error), out
        assert cause in (out.cause or "")
        assert sink.types()[-1] == "ExecutionFailed"
    else:
        assert out == Outcome(OK, output=expected)
        assert sink.types()[0] == "ExecutionStarted"
        assert sink.types()[-1] == "ExecutionSucceeded"


async def test_uuid_intrinsic_is_a_fresh_uuid() -> None:
    d = machine({"p": pass_(Parameters={"a.$": "States.UUID()", "b.$": "States.UUID()"})})
    out, _ = await run(d, {})
    a, b = out.output["a"], out.output["b"]
    assert a != b and len(a) == 36 and a.count("-") == 4


async def test_retry_backoff_timing_and_events() -> None:
    clock = ManualClock()
    calls: list[float] = []

    def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 4:
            raise ConnectionError("try again")
        return "ok"

    d = machine({"t": task("flaky", Retry=[
        {"ErrorEquals": ["KeyError"], "MaxAttempts": 9},
        {"ErrorEquals": ["ConnectionError"], "IntervalSeconds": 2, "BackoffRate": 3,
         "MaxAttempts": 5, "MaxDelaySeconds": 10}])})
    out, sink = await run(d, {}, {"flaky": flaky}, clock)
    assert out.output == "ok"
    # 2, 2*3 = 6, 2*9 = 18 capped at 10.
    assert [round(b - a, 6) for a, b in itertools.pairwise(calls)] == [2, 6, 10]
    retried = [e for e in sink.events if e["type"] == "TaskRetried"]
    assert [(e["attempt"], e["delaySeconds"], e["error"]) for e in retried] == [
        (1, 2.0, "ConnectionError"), (2, 6.0, "ConnectionError"), (3, 10.0, "ConnectionError")]


async def test_retry_gives_up_after_max_attempts_then_catch() -> None:
    clock = ManualClock()
    n = [0]

    def always() -> None:
        n[0] += 1
        raise ValueError("no")

    d = machine({"t": task("f", Retry=[{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2,
                                        "IntervalSeconds": 1}],
                           Catch=[{"ErrorEquals": ["States.ALL"], "Next": "h"}]),
                 "h": pass_()})
    out, sink = await run(d, {}, {"f": always}, clock)
    assert n[0] == 3  # first try + 2 retries
    assert out.output == {"Error": "ValueError", "Cause": "no"}
    assert "TaskCaught" in sink.types()
    # MaxAttempts 0: never retried.
    n[0] = 0
    d["States"]["t"]["Retry"][0]["MaxAttempts"] = 0
    await run(d, {}, {"f": always}, clock)
    assert n[0] == 1


async def test_retry_of_a_map_reruns_it() -> None:
    n = [0]

    def once(x: int) -> int:
        n[0] += 1
        if n[0] == 1:
            raise ValueError("first call fails")
        return x

    d = machine({"m": {"Type": "Map", "End": True, "MaxConcurrency": 1,
                       "ItemSelector": {"x.$": "$$.Map.Item.Value"},
                       "ItemProcessor": machine({"t": task("once")}),
                       "Retry": [{"ErrorEquals": ["ValueError"]}]}})
    out, sink = await run(d, [1, 2], {"once": once})
    assert out.output == [1, 2] and "TaskRetried" in sink.types()


async def test_map_max_concurrency_is_a_limit() -> None:
    async def slow(x: int) -> int:
        for _ in range(5):
            await asyncio.sleep(0)
        return x

    for limit, expect in ((2, 2), (1, 1), (0, 10)):
        inv = FakeInvoker({"slow": slow})
        d = machine({"m": {"Type": "Map", "End": True, "MaxConcurrency": limit,
                           "ItemSelector": {"x.$": "$$.Map.Item.Value"},
                           "ItemProcessor": machine({"t": task("slow")})}})
        interp = Interpreter(d, inv, ManualClock(), ListSink(), execution_id="e")
        out = await interp.run(list(range(10)))
        assert out.output == list(range(10))
        assert inv.max_in_flight == expect, limit


async def test_task_timeout_and_retry_on_timeout() -> None:
    release = asyncio.Event()

    async def hang() -> int:
        await release.wait()
        return 1

    d = machine({"t": task("hang", TimeoutSeconds=3)})
    out, sink = await run(d, {}, {"hang": hang})
    assert (out.error, out.status) == ("States.Timeout", "FAILED")
    assert "TaskTimedOut" in sink.types()
    # States.TaskFailed does not cover a timeout; States.Timeout does.
    d2 = machine({"t": task("hang", TimeoutSeconds=3, Catch=[
        {"ErrorEquals": ["States.TaskFailed"], "Next": "x"},
        {"ErrorEquals": ["States.Timeout"], "Next": "y"}]),
        "x": pass_(Result="x"), "y": pass_(Result="y")})
    out, _ = await run(d2, {}, {"hang": hang})
    assert out.output == "y"


async def test_execution_timeout() -> None:
    clock = ManualClock()
    d = machine({"w": {"Type": "Wait", "Seconds": 100, "Next": "p"}, "p": pass_()},
                TimeoutSeconds=10)
    out, sink = await run(d, {}, clock=clock)
    assert (out.status, out.error) == ("TIMED_OUT", "States.Timeout")
    assert sink.types()[-1] == "ExecutionTimedOut"
    # Time already spent before a resume counts: started 20 s ago with a 10 s limit.
    out, _ = await run(machine({"p": pass_()}, TimeoutSeconds=10), {}, clock=clock,
                       start_wall=clock.wall() - 20)
    assert out.status == "TIMED_OUT"


async def test_wait_moves_the_clock_and_checkpoints_the_deadline() -> None:
    clock = ManualClock()
    start = clock.wall()
    d = machine({"w": {"Type": "Wait", "SecondsPath": "$.s", "Next": "t"},
                 "t": {"Type": "Wait", "Timestamp": "2100-01-01T00:00:00Z", "End": True}})
    out, sink = await run(d, {"s": 7}, clock=clock)
    assert out.status == "SUCCEEDED"
    assert sink.transitions[1] == ("w", {"s": 7}, start + 7)
    assert clock.wall() == pytest.approx(4102444800.0)


async def test_resume_continues_from_the_checkpoint() -> None:
    clock = ManualClock()
    inv = FakeInvoker(FUNCTIONS, clock)
    d = machine({"a": task("add", Next="b", ResultPath="$.s"),
                 "b": task("double", Parameters={"x.$": "$.s"})})
    sink = ListSink()
    interp = Interpreter(d, inv, clock, sink, execution_id="e")
    out = await interp.run({"a": 1, "b": 2}, resume=Resume("b", {"a": 1, "b": 2, "s": 10}))
    assert out.output == 20
    assert [c[0] for c in inv.calls] == ["double"]  # "a" is not run again
    assert "ExecutionStarted" not in sink.types()
    # A resumed Wait waits only for what is left.
    before = clock.now()
    w = machine({"w": {"Type": "Wait", "Seconds": 100, "End": True}})
    out = await Interpreter(w, inv, clock, ListSink(), execution_id="e").run(
        {}, resume=Resume("w", {}, clock.wall() + 3))
    assert clock.now() - before == pytest.approx(3)


async def test_history_events_of_a_task() -> None:
    d = machine({"t": task("add", Next="c"),
                 "c": {"Type": "Choice", "Choices": [
                     {"Variable": "$", "NumericEquals": 3, "Next": "s"}]},
                 "s": {"Type": "Succeed"}})
    _, sink = await run(d, {"a": 1, "b": 2})
    assert sink.types() == [
        "ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskSucceeded",
        "TaskStateExited", "ChoiceStateEntered", "ChoiceStateExited", "SucceedStateEntered",
        "SucceedStateExited", "ExecutionSucceeded"]
    sched = sink.events[2]
    assert (sched["name"], sched["resource"], sched["input"]) == ("t", "add", {"a": 1, "b": 2})
    assert sink.events[3]["output"] == 3
    assert all(e["timestamp"].endswith("Z") for e in sink.events)
    assert [t[0] for t in sink.transitions] == ["t", "c", "s"]


async def test_payload_limit() -> None:
    d = machine({"t": task("big")})
    out, _ = await run(d, {}, {"big": lambda: "x" * 300_000})
    assert out.error == "States.DataLimitExceeded"


async def test_parallel_failure_cancels_other_branches() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("x")

    d = machine({"p": {"Type": "Parallel", "End": True, "Branches": [
        machine({"a": task("forever")}), machine({"b": task("fails")})]}})
    out, _ = await run(d, {}, {"forever": forever, "fails": fails})
    assert out.error == "ValueError" and cancelled.is_set()
