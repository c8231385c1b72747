"""`allinone workflow ...` over a fake transport: what it sends and what it prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from allinone import cli, cli_workflows
from allinone.client import Client

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


class FakeClient(Client):
    """The real client over a fake transport: records each request, answers from here."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1")
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        body = kw.get("json") or (json.loads(kw["data"]) if kw.get("data") else None)
        self.sent.append((method, path, body))
        out: Any = {}
        if path.startswith("/workflow/"):
            out = {"executionId": "e1"} if "async" in path else {
                "executionId": "e1", "status": "SUCCEEDED", "output": 2}
        elif "/executions/" in path:
            out = EXECUTION
        elif method in ("POST", "PUT") or path == "/api/v1/workflows/w":
            out = {"metadata": {"name": "w", "generation": 1}, "spec": {"definition": DEF},
                   "status": {"phase": "Ready"}}
        resp = requests.Response()
        resp.status_code, resp._content = 200, json.dumps(out).encode()
        return resp


def run(argv: list[str], client: FakeClient) -> int:
    args = cli.build_parser().parse_args(argv)
    return cli_workflows.run(client, args)


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
