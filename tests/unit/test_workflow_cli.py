"""`allinone workflow ...` over a fake HTTP client: what it sends and what it prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from allinone import cli, cli_workflows

DEF = {"StartAt": "a", "States": {"a": {"Type": "Task", "Resource": "inc", "End": True}}}
EXECUTION = {"executionId": "e1", "workflow": "w", "status": "FAILED", "input": {"n": 1},
             "startDate": "2026-01-01T00:00:00.000Z", "stopDate": "2026-01-01T00:00:01.000Z",
             "error": "ValueError", "cause": "bad",
             "events": [{"id": 1, "timestamp": "t1", "type": "ExecutionStarted",
                         "input": {"n": 1}},
                        {"id": 2, "timestamp": "t2", "type": "TaskFailed", "name": "a",
                         "error": "ValueError", "cause": "bad"},
                        {"id": 3, "timestamp": "t3", "type": "ExecutionFailed",
                         "error": "ValueError", "cause": "bad"}]}


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, bytes]:
        self.sent.append((method, path, None))
        return 404, b""

    def json(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        self.sent.append((method, path, json.loads(body) if body else None))
        if path.startswith("/workflow/"):
            return {"executionId": "e1"} if "async" in path else {"executionId": "e1",
                                                                   "status": "SUCCEEDED",
                                                                   "output": 2}
        if "/executions/" in path:
            return EXECUTION
        if method in ("POST", "PUT") or path == "/api/v1/workflows/w":
            return {"metadata": {"name": "w", "generation": 1}, "spec": {"definition": DEF},
                    "status": {"phase": "Ready"}}
        return {}


def run(argv: list[str], client: FakeClient) -> int:
    args = cli.build_parser().parse_args(argv)
    return cli_workflows.run(client, args)  # type: ignore[arg-type]


def test_deploy_yaml_creates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("StartAt: a\nStates:\n  a: {Type: Task, Resource: inc, End: true}\n")
    c = FakeClient()
    assert run(["workflow", "deploy", "w", "--file", str(f)], c) == 0
    assert c.sent[-1] == ("POST", "/api/v1/workflows", {"name": "w", "definition": DEF})
    assert "w deployed" in capsys.readouterr().out


def test_bad_file_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "w.json"
    f.write_text("{nope")
    with pytest.raises(cli.CliError, match="not valid JSON"):
        run(["workflow", "deploy", "w", "--file", str(f)], FakeClient())


def test_run_sync_and_async(capsys: pytest.CaptureFixture[str]) -> None:
    c = FakeClient()
    assert run(["workflow", "run", "w", "-d", '{"n": 1}'], c) == 0
    assert json.loads(capsys.readouterr().out)["output"] == 2
    assert run(["workflow", "run", "w", "--async"], c) == 0
    assert capsys.readouterr().out.strip() == "e1"
    assert c.sent[-1][1] == "/workflow/w?mode=async"


def test_execution_history_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["workflow", "execution", "w", "e1"], FakeClient()) == 0
    out = capsys.readouterr().out
    assert "Status:    FAILED" in out and "Error:     ValueError" in out
    row = next(line for line in out.splitlines() if "TaskFailed" in line)
    assert row.split()[:4] == ["2", "t2", "TaskFailed", "a"] and "ValueError: bad" in row


def test_graph_dot(tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    assert run(["workflow", "graph", "w", "-o", str(out), "--execution", "e1"],
               FakeClient()) == 0
    assert '"/a"' in out.read_text()
    with pytest.raises(cli.CliError, match="name the file"):
        run(["workflow", "graph", "w", "-o", str(tmp_path / "g.txt")], FakeClient())
