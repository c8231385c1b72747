"""The CLI as the README shows it, against a live server: every command's text and
``-o json`` output, directory zipping, the scaling flags, how it finds the server
(``--server``, ``$ALLINONE_SERVER``), and errors as one line on stderr with exit 1.

The CLI runs as a user runs it, in a subprocess (``python -m allinone.cli``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, free_port

pytestmark = pytest.mark.integration

HELLO = b'''def run(name="world"):
    print(f"hello-log {name}", flush=True)
    return f"hi {name}"
'''


def cli(*args: str, server: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ALLINONE_SERVER"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "allinone.cli"]
    if server is not None:
        argv += ["--server", server]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed the way the README says: exit 1, one line 'error: ...' on stderr."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_deploy_invoke_list_get_logs_delete(server: ServerProcess, tmp_path: Path) -> None:
    src = tmp_path / "hello.py"
    src.write_bytes(HELLO)
    url = server.url

    out = ok(cli("function", "deploy", "cli-hello", "--file", str(src), server=url))
    assert re.fullmatch(r"cli-hello is Ready in \d+\.\d\d s: \S+/allinone/cli-hello@sha256:"
                        r"[0-9a-f]{64}\n", out), out

    assert ok(cli("invoke", "cli-hello", "-d", '{"name": "bob"}', server=url)) == '"hi bob"\n'
    assert ok(cli("invoke", "cli-hello", server=url)) == '"hi world"\n'  # no -d: no arguments

    lines = ok(cli("function", "list", server=url)).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "READY", "DESIRED", "AGE"]
    row = next(line.split() for line in lines[1:] if line.split()[0] == "cli-hello")
    assert row[1] == "Ready" and row[2].isdigit() and row[3].isdigit()
    assert re.fullmatch(r"\d+[smh]", row[4]), row

    listed = json.loads(ok(cli("function", "list", "-o", "json", server=url)))
    assert "cli-hello" in [f["metadata"]["name"] for f in listed["items"]]

    text = ok(cli("function", "get", "cli-hello", server=url))
    head = text.split("\n\n", 1)[0]  # the fields; a table of pods may follow
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert fields["Name"].strip() == "cli-hello"
    assert fields["Phase"].strip() == "Ready"
    assert fields["Handler"].strip() == "run"
    assert fields["Source"].strip() == f"hello.py ({len(HELLO)} bytes)"
    assert fields["Generation"].strip() == "1 (observed 1)"
    assert re.fullmatch(r"desired \d+, ready \d+, total \d+", fields["Replicas"].strip())
    assert fields["Panic mode"].strip() in ("yes", "no")
    for key in ("Message", "Image", "Concurrency", "Autoscaler", "Scaling"):
        assert key in fields, text

    fn = json.loads(ok(cli("function", "get", "cli-hello", "-o", "json", server=url)))
    assert fn["metadata"]["name"] == "cli-hello" and fn["status"]["phase"] == "Ready"
    assert fn["spec"]["source"]["filename"] == "hello.py"

    assert "hello-log bob" in ok(cli("logs", "cli-hello", server=url))

    assert ok(cli("function", "delete", "cli-hello", server=url)) == "cli-hello deleted\n"
    line = one_line_error(cli("function", "get", "cli-hello", server=url))
    assert "no function named 'cli-hello'" in line and line.endswith("(HTTP 404)")
    line = one_line_error(cli("logs", "cli-hello", server=url))
    assert "no function named 'cli-hello'" in line


def test_deploy_a_directory_zips_it(server: ServerProcess) -> None:
    out = ok(cli("function", "deploy", "cli-dir", "--file", str(FIXTURES / "realistic"),
                 "--handler", "app.main.handle", server=server.url))
    assert out.startswith("cli-dir is Ready in ")
    fn = server.get("cli-dir")
    assert fn["spec"]["source"]["filename"] == "realistic.zip"
    assert fn["spec"]["handler"] == "app.main.handle"
    answer = json.loads(ok(cli("invoke", "cli-dir", "-d", '{"text": "a b a", "top": 1}',
                               server=server.url)))
    assert answer  # the package's modules and its data file were all in the zip
    assert server.delete("cli-dir").status_code == 200


def test_every_scaling_flag_reaches_the_spec(server: ServerProcess) -> None:
    # The README's flags, each with a value other than its default, so a flag that is
    # dropped on the way shows.
    args = ["function", "deploy", "cli-flags", "--file", str(FIXTURES / "sleep.py"),
            "--min-scale", "1", "--max-scale", "8", "--target", "5",
            "--target-utilization", "80", "--container-concurrency", "3", "--window", "30",
            "--panic-window-percentage", "20", "--panic-threshold", "300",
            "--max-scale-up-rate", "500", "--max-scale-down-rate", "4",
            "--scale-to-zero-grace", "15", "--initial-scale", "1", "--timeout", "45",
            "--scale-to-zero-retention", "20", "--scale-down-delay", "10",
            "--activation-scale", "2", "--metric", "rps", "--target-burst-capacity", "100",
            "--memory", "200", "--cpus", "0.5", "--env", "GREETING=hello", "--no-wait",
            "-o", "json"]
    fn = json.loads(ok(cli(*args, server=server.url)))
    spec = fn["spec"]
    assert spec["scaling"] == {
        "minScale": 1, "maxScale": 8, "target": 5, "targetUtilizationPercentage": 80,
        "containerConcurrency": 3, "stableWindowSeconds": 30, "panicWindowPercentage": 20,
        "panicThresholdPercentage": 300, "maxScaleUpRate": 500, "maxScaleDownRate": 4,
        "scaleToZeroGracePeriodSeconds": 15, "initialScale": 1,
        "scaleToZeroPodRetentionSeconds": 20, "scaleDownDelaySeconds": 10,
        "activationScale": 2, "metric": "rps", "targetBurstCapacity": 100}
    assert spec["timeoutSeconds"] == 45
    assert spec["resources"] == {"memoryMiB": 200, "cpus": 0.5}
    assert spec["env"] == {"GREETING": "hello"}
    # deploy of an existing name updates it: a new generation, other fields kept.
    fn = json.loads(ok(cli("function", "deploy", "cli-flags", "--max-scale", "3", "--no-wait",
                           "-o", "json", server=server.url)))
    assert fn["metadata"]["generation"] == 2
    assert fn["spec"]["scaling"]["maxScale"] == 3 and fn["spec"]["scaling"]["target"] == 5
    assert fn["spec"]["env"] == {"GREETING": "hello"}
    assert server.delete("cli-flags").status_code == 200


def test_server_is_found_by_flag_then_environment(server: ServerProcess) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    # $ALLINONE_SERVER alone is enough.
    assert ok(cli("function", "list", env={"ALLINONE_SERVER": server.url})).startswith("NAME")
    # --server wins over $ALLINONE_SERVER.
    line = one_line_error(cli("function", "list", server=nowhere,
                              env={"ALLINONE_SERVER": server.url}))
    assert line.startswith(f"error: cannot reach allinone at {nowhere} (")
    assert line.endswith("is `allinone serve` running? (set --server or ALLINONE_SERVER)")
    assert ok(cli("function", "list", server=server.url,
                  env={"ALLINONE_SERVER": nowhere})).startswith("NAME")


def test_without_flag_or_environment_the_default_is_8080() -> None:
    result = cli("function", "list", "-o", "json")
    if result.returncode == 0:  # a developer's own server answers there
        assert "items" in json.loads(result.stdout)
    else:
        assert "cannot reach allinone at http://127.0.0.1:8080 " in one_line_error(result)


def test_errors_are_one_line_with_a_nonzero_exit(server: ServerProcess,
                                                 tmp_path: Path) -> None:
    url = server.url
    line = one_line_error(cli("invoke", "cli-nothing", "-d", "{}", server=url))
    assert "no function named 'cli-nothing'" in line and line.endswith("(HTTP 404)")
    line = one_line_error(cli("function", "deploy", "cli-x", "--file",
                              str(tmp_path / "missing.py"), server=url))
    assert line == f"error: no such file: {tmp_path / 'missing.py'}"
    line = one_line_error(cli("function", "deploy", "cli-x", server=url))
    assert line == "error: --file is required to deploy a new function"
    bad = tmp_path / "bad.py"
    bad.write_text("def other():\n    return 1\n")
    line = one_line_error(cli("function", "deploy", "cli-x", "--file", str(bad), server=url))
    assert "does not define 'run' at top level" in line and line.endswith("(HTTP 400)")
    line = one_line_error(cli("function", "deploy", "cli-x", "--file", str(FIXTURES / "add.py"),
                              "--env", "NOEQUALS", server=url))
    assert line == "error: --env takes KEY=VALUE, got 'NOEQUALS'"
    line = one_line_error(cli("function", "delete", "cli-x", server=url))
    assert "no function named 'cli-x'" in line
    assert server.http.get(url + "/api/v1/functions/cli-x").status_code == 404
