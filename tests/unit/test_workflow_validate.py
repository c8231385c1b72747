"""Definition validation: each bad definition is refused with the path of what is wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from allinone.workflows.validate import DefinitionError, validate

GOOD: dict[str, Any] = {
    "Comment": "ok",
    "StartAt": "check",
    "TimeoutSeconds": 60,
    "States": {
        "check": {"Type": "Choice", "Choices": [
            {"Variable": "$.n", "NumericGreaterThan": 0, "Next": "work"},
            {"And": [{"Variable": "$.s", "IsString": True},
                     {"Not": {"Variable": "$.s", "StringEquals": "x"}}], "Next": "fan"}],
            "Default": "done"},
        "work": {"Type": "Task", "Resource": "add", "Next": "done", "TimeoutSeconds": 5,
                 "Parameters": {"a.$": "$.n", "b": 1, "f.$": "States.Format('{}', $.n)"},
                 "Retry": [{"ErrorEquals": ["ValueError"], "MaxAttempts": 2},
                           {"ErrorEquals": ["States.ALL"]}],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "failed",
                            "ResultPath": "$.err"}]},
        "fan": {"Type": "Parallel", "Next": "each", "Branches": [
            {"StartAt": "b1", "States": {"b1": {"Type": "Pass", "End": True}}}]},
        "each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "Next": "wait",
                 "ItemProcessor": {"StartAt": "i", "States": {
                     "i": {"Type": "Task", "Resource": "double", "End": True}}}},
        "wait": {"Type": "Wait", "SecondsPath": "$.s", "Next": "done"},
        "done": {"Type": "Succeed"},
        "failed": {"Type": "Fail", "Error": "E", "Cause": "c"},
    },
}


def bad(path: list[Any], value: Any = None, delete: bool = False) -> dict[str, Any]:
    d = copy.deepcopy(GOOD)
    node = d
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


CASES = [
    ("next-missing-state", bad(["States", "work", "Next"], "chek"),
     'States.work.Next: no state named "chek"'),
    ("startat", bad(["StartAt"], "nope"), 'StartAt: no state named "nope"'),
    ("default", bad(["States", "check", "Default"], "x"), 'States.check.Default: no state'),
    ("catch-next", bad(["States", "work", "Catch", 0, "Next"], "x"),
     "States.work.Catch[0].Next: no state"),
    ("unknown-field", bad(["States", "work", "Resourse"], "add"),
     "States.work.Resourse: unknown field"),
    ("unknown-top", bad(["Startat"], "x"), "Startat: unknown field"),
    ("bad-type", bad(["States", "done", "Type"], "Finish"), "States.done.Type: must be one of"),
    ("unreachable", bad(["States", "orphan"], {"Type": "Succeed"}),
     "States.orphan: is not reachable"),
    ("no-terminal", {"StartAt": "a", "States": {"a": {"Type": "Pass", "Next": "a"}}},
     "States: no terminal state"),
    ("next-and-end", bad(["States", "work", "End"], True), "States.work: has both Next and End"),
    ("neither-next-nor-end", bad(["States", "wait", "Next"], delete=True),
     "States.wait: needs Next"),
    ("resource", bad(["States", "work", "Resource"], "Bad_Name"),
     "States.work.Resource: must be the name of an allinone function"),
    ("timeout-type", bad(["States", "work", "TimeoutSeconds"], "5"),
     "States.work.TimeoutSeconds: must be a whole number"),
    ("reference-path", bad(["States", "work", "ResultPath"], "$.a[*]"),
     "States.work.ResultPath: '$.a[*]' is not a reference path"),
    ("path-syntax", bad(["States", "work", "InputPath"], "a.b"),
     "States.work.InputPath: 'a.b' is not a path"),
    ("parameters-path", bad(["States", "work", "Parameters", "a.$"], "$.["),
     "States.work.Parameters.a.$"),
    ("intrinsic-unknown", bad(["States", "work", "Parameters", "f.$"], "States.Nope(1)"),
     "States.work.Parameters.f.$: 'States.Nope(1)': unknown intrinsic"),
    ("intrinsic-syntax", bad(["States", "work", "Parameters", "f.$"], "States.Format('x'"),
     "States.work.Parameters.f.$"),
    ("choice-two-operators", bad(["States", "check", "Choices", 0, "StringEquals"], "x"),
     "States.check.Choices[0]: needs exactly one operator"),
    ("choice-value-type", bad(["States", "check", "Choices", 0, "NumericGreaterThan"], "0"),
     "States.check.Choices[0].NumericGreaterThan: must be a number"),
    ("choice-nested-next", bad(["States", "check", "Choices", 1, "And", 0, "Next"], "done"),
     "States.check.Choices[1].And[0].Next: only top-level"),
    ("choice-no-next", bad(["States", "check", "Choices", 0, "Next"], delete=True),
     "States.check.Choices[0]: a top-level choice rule needs Next"),
    ("choice-timestamp", bad(["States", "check", "Choices", 0],
                             {"Variable": "$.t", "TimestampEquals": "yesterday",
                              "Next": "done"}),
     "Choices[0].TimestampEquals: must be an RFC 3339 timestamp"),
    ("retry-all-not-last", bad(["States", "work", "Retry"],
                               [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["E"]}]),
     "States.work.Retry[0].ErrorEquals: States.ALL must appear alone"),
    ("retry-backoff", bad(["States", "work", "Retry", 0, "BackoffRate"], 0.5),
     "States.work.Retry[0].BackoffRate: must be a number from 1"),
    ("retry-unknown", bad(["States", "work", "Retry", 0, "Backoff"], 2),
     "States.work.Retry[0].Backoff: unknown field"),
    ("wait-two-fields", bad(["States", "wait", "Seconds"], 3),
     "States.wait: a Wait state needs exactly one"),
    ("branch-next", bad(["States", "fan", "Branches", 0, "States", "b1"],
                        {"Type": "Pass", "Next": "done"}),
     'States.fan.Branches[0].States.b1.Next: no state named "done"'),
    ("map-processor", bad(["States", "each", "ItemProcessor", "StartAt"], "j"),
     'States.each.ItemProcessor.StartAt: no state named "j"'),
    ("map-concurrency", bad(["States", "each", "MaxConcurrency"], -1),
     "States.each.MaxConcurrency"),
    ("map-distributed", bad(["States", "each", "ItemProcessor", "ProcessorConfig"],
                            {"Mode": "DISTRIBUTED"}), "ProcessorConfig: only"),
    ("execution-timeout", bad(["TimeoutSeconds"], 0), "TimeoutSeconds: must be a whole number"),
    ("not-object", [], "definition: must be a JSON object"),
    ("fail-error-type", bad(["States", "failed", "Error"], 3), "States.failed.Error: must be"),
    ("comment-type", bad(["States", "work", "Comment"], 3), "States.work.Comment: must be"),
    ("top-comment-type", bad(["Comment"], ["x"]), "Comment: must be a string"),
    ("resultpath-context", bad(["States", "work", "ResultPath"], "$$.x"),
     "States.work.ResultPath"),
]


@pytest.mark.parametrize(("definition", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_definitions_name_the_path(definition: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        validate(definition)
    assert str(info.value).startswith(message) or message in str(info.value), str(info.value)


def test_good_definition_passes() -> None:
    assert validate(copy.deepcopy(GOOD)) == GOOD
