"""The Graphviz picture: Choice rules as edge labels, Catch edges, the execution's path."""

from __future__ import annotations

import shutil

import pytest

from allinone.workflows.graph import HIGHLIGHT, path_of, render

D = {"StartAt": "check", "States": {
    "check": {"Type": "Choice", "Choices": [
        {"Variable": "$.n", "NumericGreaterThan": 10, "Next": "big"}], "Default": "small"},
    "big": {"Type": "Task", "Resource": "double", "Next": "done",
            "Catch": [{"ErrorEquals": ["ValueError"], "Next": "oops"}]},
    "small": {"Type": "Map", "Next": "done", "ItemProcessor": {
        "StartAt": "inner", "States": {"inner": {"Type": "Pass", "End": True}}}},
    "done": {"Type": "Succeed"},
    "oops": {"Type": "Fail", "Error": "E"}}}


def test_edges_and_labels() -> None:
    src = render(D, "demo").source
    assert '"/check" -> "/big" [label="$.n NumericGreaterThan 10"' in src
    assert '"/check" -> "/small" [label=Default' in src
    assert '"/big" -> "/oops" [label="Catch: ValueError"' in src and "dashed" in src
    assert "cluster_/small" in src and '"/small/0/inner"' in src
    assert HIGHLIGHT not in src  # nothing highlighted without an execution


def test_execution_path_is_highlighted() -> None:
    events = [{"type": "ExecutionStarted"},
              {"type": "ChoiceStateEntered", "name": "check"},
              {"type": "ChoiceStateExited", "name": "check"},
              {"type": "TaskStateEntered", "name": "big"},
              {"type": "TaskFailed", "name": "big", "error": "ValueError"},
              {"type": "TaskCaught", "name": "big"},
              {"type": "FailStateEntered", "name": "oops"},
              {"type": "ExecutionFailed"}]
    trace = path_of(events)
    assert set(trace.entered) == {"check", "big", "oops"}
    assert trace.took("check", "big") and trace.took("big", "oops")
    assert not trace.took("check", "small") and not trace.took("oops", "big")
    assert trace.failed == "oops"
    src = render(D, "demo", events).source
    assert f'"/check" -> "/big" [label="$.n NumericGreaterThan 10" color="{HIGHLIGHT}"' in src
    assert '"/check" -> "/small" [label=Default color=black' in src


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_renders_svg() -> None:
    assert b"<svg" in render(D, "demo").pipe(format="svg")
