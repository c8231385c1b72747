"""Admission on a real server (issue 7): requirements.txt forms refused by line, builds
that run no package code on the host, the pod budget at create and under load, and the
management API's bearer token.

One server for the module, started the way an operator would lock it down:
``--pod-memory-budget 512 --max-pods-per-function 4 --require-token``, with
``PIP_FIND_LINKS`` pointing at a directory that holds a hostile sdist (its setup.py
writes a marker file). Small budgets keep the load test at a few 128 MiB pods.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from allinone.testing import FIXTURES, ServerProcess, make_zip, wait_for
from loadtests.loadgen import run_load

pytestmark = pytest.mark.integration

BUDGET_MIB = 512
CEILING = 4
ADD = (FIXTURES / "add.py").read_bytes()
SDIST = f"allinone-evil-{uuid.uuid4().hex[:8]}"



def make_sdist(links: Path, marker: Path) -> None:
    """SDIST-1.0.tar.gz in ``links``: building or installing it writes ``marker``."""
    root = f"{SDIST}-1.0"
    setup_py = (f"open({str(marker)!r}, 'w').write('setup.py ran')\n"
                f"from setuptools import setup\nsetup(name={SDIST!r}, version='1.0')\n")
    pkg_info = f"Metadata-Version: 2.1\nName: {SDIST}\nVersion: 1.0\n"
    with tarfile.open(links / f"{root}.tar.gz", "w:gz") as tar:
        for name, text in (("setup.py", setup_py), ("PKG-INFO", pkg_info)):
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    links = tmp_path_factory.mktemp("links")
    marker = tmp_path_factory.mktemp("marker") / "MARKER"
    make_sdist(links, marker)
    return links, marker


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory,
           evil: tuple[Path, Path]) -> Iterator[ServerProcess]:
    links, _ = evil
    find_links = " ".join(p for p in (str(links), os.environ.get("PIP_FIND_LINKS", "")) if p)
    srv = ServerProcess(Path(tmp_path_factory.mktemp("admission-state")),
                        extra_args=("--pod-memory-budget", str(BUDGET_MIB),
                                    "--max-pods-per-function", str(CEILING),
                                    "--require-token"),
                        env={"PIP_FIND_LINKS": find_links})
    srv.start()
    try:
        yield srv
    finally:
        for fn in srv.client.functions():
            srv.delete(fn["metadata"]["name"])
        srv.stop()
        srv.cleanup_containers()


def create(server: ServerProcess, name: str, data: bytes, filename: str = "f.zip",
           spec: dict[str, object] | None = None) -> requests.Response:
    form = {"name": name}
    if spec is not None:
        form["spec"] = json.dumps(spec)
    return server.http.post(server.url + "/api/v1/functions", data=form,
                            files={"source": (filename, data)})


# ---------------------------------------------------------------------------
# requirements.txt


REFUSED = [
    ("evilpkg @ http://127.0.0.1:9/evilpkg-1.0.tar.gz", "direct reference"),
    ("http://127.0.0.1:9/evilpkg-1.0.tar.gz", "URLs are not supported"),
    ("git+https://127.0.0.1:9/evil.git", "VCS links"),
    ("./evilpkg", "local paths"),
    ("evilpkg-1.0.tar.gz", "archive file"),
    ("-e .", "editable install"),
    ("-i http://127.0.0.1:9/simple", "pip option '-i'"),
    ("--index-url http://127.0.0.1:9/simple", "pip option '--index-url'"),
    ("--extra-index-url http://127.0.0.1:9/simple", "pip option '--extra-index-url'"),
    ("-f /tmp", "pip option '-f'"),
    ("-r /etc/passwd", "pip option '-r'"),
    ("-c /etc/passwd", "pip option '-c'"),
    ("--trusted-host 127.0.0.1", "pip option '--trusted-host'"),
]


@pytest.mark.parametrize(("line", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_requirement_form_is_refused_naming_the_line(
        locked: ServerProcess, line: str, words: str) -> None:
    name = f"req-{uuid.uuid4().hex[:8]}"
    data = make_zip({"func.py": ADD,
                     "requirements.txt": f"# deps\nsix\n{line}\n".encode()})
    r = create(locked, name, data)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "requirements.txt line 3" in message and words in message, message
    assert locked.client.find(name) is None


def test_no_wheel_fails_the_build_and_runs_no_package_code(
        locked: ServerProcess, evil: tuple[Path, Path]) -> None:
    links, marker = evil
    data = make_zip({"func.py": ADD, "requirements.txt": f"{SDIST}==1.0\n".encode()})
    assert create(locked, "nowheel", data).status_code == 201
    fn = locked.wait_phase("nowheel", "Failed")
    message = fn["status"]["message"]
    assert f"'{SDIST}==1.0' (requirements.txt line 1)" in message, message
    assert "A wheel is needed" in message and "only a source distribution" in message, message
    assert not marker.exists(), "the sdist's setup.py ran on the host"
    assert locked.containers("nowheel", all=True) == []

    # Control: the same sdist with pip's default (sources allowed) does run setup.py,
    # so the check above can fail.
    target = marker.parent / "control-target"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(links),
         "--no-build-isolation", "--target", str(target), "--no-deps", f"{SDIST}==1.0"],
        capture_output=True, timeout=300, check=False)
    assert marker.exists(), "control: pip with sources allowed did not run setup.py"
    marker.unlink()


async def test_pip_gets_a_minimal_environment_and_a_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the interpreter: records the environment it got, starts a child
    # that would outlive it, and hangs. No Docker is needed to reach pip.
    from allinone.builder.builder import Builder, BuildError

    monkeypatch.setenv("ALLINONE_SECRET_FOR_TEST", "do-not-leak")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nenv > {tmp_path}/env.txt\npwd > {tmp_path}/cwd.txt\n"
                    f"sleep 300 &\necho $! > {tmp_path}/child.pid\nwait\n")
    fake.chmod(0o755)
    builder = Builder("unused", "127.0.0.1:9", tmp_path / "work", client=lambda: None,
                      pip_python=str(fake), pip_timeout=2)
    with pytest.raises(BuildError, match="took longer than 2 s"):
        await builder._deps(b"six\n")
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines()
               if "=" in line)
    assert "ALLINONE_SECRET_FOR_TEST" not in env
    assert env["PIP_INDEX_URL"] == "https://mirror.invalid/simple"
    assert env["LANG"] == "C.UTF-8" and env["HOME"].startswith(str(tmp_path / "work"))
    allowed = {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_"}  # the last three: the shell's
    assert {k for k in env if not k.startswith("PIP_") and not k.upper().endswith("_PROXY")
            and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")} <= allowed
    assert (tmp_path / "cwd.txt").read_text().strip().startswith(str(tmp_path / "work"))
    child = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists()
             or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2], 10,
             "pip's child to be killed with it")
    # Nothing half-made is left: no deps directory, no scratch directory.
    assert list((tmp_path / "work" / "deps").iterdir()) == []


# ---------------------------------------------------------------------------
# names, handler and env


ENV_REFUSED = [
    ("name with a newline", "nl2\n", None, ["DNS-1123"]),
    ("handler with a newline", "hnl", {"handler": "run\n"}, ["spec.handler"]),
    ("env key with a newline", "envkey", {"env": {"KEY\n": "v"}},
     ["not a valid environment variable name"]),
    ("200 KB env value", "envbig", {"env": {"BIG": "x" * 200_000}},
     ["spec.env.BIG", "32 KiB"]),
    ("2 MiB env value", "envhuge", {"env": {"HUGE": "x" * (2 << 20)}}, ["spec.env.HUGE"]),
    ("env over 64 KiB in all", "envsum", {"env": {f"K{i}": "x" * 30_000 for i in range(3)}},
     ["64 KiB"]),
]


@pytest.mark.parametrize(("name", "spec", "words"), [c[1:] for c in ENV_REFUSED],
                         ids=[c[0] for c in ENV_REFUSED])
def test_names_handlers_env_full_match_and_env_is_bounded(
        locked: ServerProcess, name: str, spec: dict[str, object] | None,
        words: list[str]) -> None:
    r = create(locked, name, ADD, "add.py", spec)
    assert r.status_code == 400, r.text[:300]
    message = r.json()["error"]["message"]
    for word in words:
        assert word in message, message
    listed = locked.client.functions()
    assert name not in {f["metadata"]["name"] for f in listed}


# ---------------------------------------------------------------------------
# the pod budget


def test_over_budget_specs_are_refused(locked: ServerProcess) -> None:
    r = create(locked, "toobig", ADD, "add.py",
               {"scaling": {"minScale": 3, "maxScale": 4}, "resources": {"memoryMiB": 256}})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "minScale 3 x resources.memoryMiB 256 = 768 MiB" in message, message
    assert f"budget of {BUDGET_MIB} MiB" in message, message
    r = create(locked, "toomany", ADD, "add.py", {"scaling": {"maxScale": CEILING + 1}})
    assert r.status_code == 400
    assert f"limit of {CEILING} pods per function" in r.json()["error"]["message"]
    r = create(locked, "issue", ADD, "add.py",
               {"scaling": {"minScale": 1000, "maxScale": 1000},
                "resources": {"memoryMiB": 65536}})
    assert r.status_code == 400
    for name in ("toobig", "toomany", "issue"):
        assert locked.client.find(name) is None

    # An update is held to the same limits and leaves the function as it was.
    assert create(locked, "fits", ADD, "add.py").status_code == 201
    r = locked.update("fits", spec={"scaling": {"minScale": 3},
                                    "resources": {"memoryMiB": 256}})
    assert r.status_code == 400 and "768 MiB" in r.json()["error"]["message"]
    fn = locked.get("fits")
    assert fn["metadata"]["generation"] == 1 and fn["spec"]["scaling"]["minScale"] == 0
    assert locked.delete("fits").status_code == 200


async def test_load_beyond_the_budget_is_capped_with_the_reason(locked: ServerProcess) -> None:
    # "hold" keeps 2 x 128 MiB running: 256 of the 512 MiB are left, so "capped" may
    # have 2 pods of 128 MiB while 4 concurrent users ask for 4 (target 1 per pod).
    small = {"memoryMiB": 128}
    assert locked.deploy("hold", FIXTURES / "sleep.py",
                         spec={"scaling": {"minScale": 2, "maxScale": 2},
                               "resources": small}).status_code == 201
    wait_for(lambda: locked.get("hold")["status"].get("readyReplicas") == 2, 60,
             "2 ready pods of hold")
    spec = {"resources": small,
            "scaling": {"maxScale": CEILING, "target": 1, "targetUtilizationPercentage": 100,
                        "containerConcurrency": 1, "stableWindowSeconds": 6}}
    assert locked.deploy("capped", FIXTURES / "sleep.py", spec=spec).status_code == 201

    def cli_get() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "allinone.cli", "--server", locked.url, "function", "get",
             "capped"], capture_output=True, text=True, timeout=60, check=True,
            env={**os.environ, "ALLINONE_STATE_DIR": str(locked.state_dir)})
        return out.stdout

    most = 0
    stop = asyncio.Event()
    load = asyncio.ensure_future(run_load(locked.url + "/function/capped", 4, 12,
                                          {"ms": 1000}, stop=stop))
    capped: dict[str, Any] = {}
    shown = ""
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        fn = await asyncio.to_thread(locked.get, "capped")
        most = max(most, fn["status"].get("desiredReplicas", 0),
                   len(await asyncio.to_thread(locked.containers, "capped")))
        if fn["status"].get("capped"):
            capped = fn["status"]["capped"]
            if not shown:
                shown = await asyncio.to_thread(cli_get)
    stop.set()
    result = await load
    assert result.failures == [], result.summary()
    assert capped.get("reason") == "PodMemoryBudget", capped
    assert capped["allowed"] == 2 and capped["requested"] > 2, capped
    assert "other functions hold 256 MiB" in capped["message"], capped
    assert most == 2, f"capped function reached {most} pods"
    line = next(ln for ln in shown.splitlines() if ln.startswith("Capped:"))
    assert "capped at 2 of" in line and "pod memory budget is 512 MiB" in line, shown

    # Once the load is gone the autoscaler wants fewer pods, and the cap is lifted.
    wait_for(lambda: "capped" not in locked.get("capped")["status"], 60,
             "status.capped to be cleared")
    for name in ("hold", "capped"):
        assert locked.delete(name).status_code == 200


# ---------------------------------------------------------------------------
# the bearer token


def test_management_api_requires_the_token(locked: ServerProcess) -> None:
    token_file = locked.state_dir / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    bare = requests.Session()
    for method, path in (("GET", "/api/v1/functions"), ("GET", "/api/v1/functions/x"),
                         ("DELETE", "/api/v1/functions/x"),
                         ("GET", "/api/v1/namespaces/serverless/pods")):
        r = bare.request(method, locked.url + path)
        assert r.status_code == 401, (method, path, r.text)
        err = r.json()["error"]
        assert err["code"] == "Unauthorized" and "token" in err["message"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = bare.post(locked.url + "/api/v1/functions", data={"name": "sneak"},
                  files={"source": ("f.py", ADD)})
    assert r.status_code == 401
    r = bare.get(locked.url + "/api/v1/functions",
                 headers={"Authorization": "Bearer " + "x" * 43})
    assert r.status_code == 401 and "wrong bearer token" in r.json()["error"]["message"]
    r = bare.get(locked.url + "/api/v1/functions",
                 headers={"Authorization": f"Bearer {locked.token()}"})
    assert r.status_code == 200
    # Triggers, liveness and metrics stay open.
    assert bare.post(locked.url + "/function/sneak", json={}).status_code == 404
    assert bare.get(locked.url + "/healthz").status_code == 200
    assert bare.get(locked.url + "/metrics").status_code == 200
    assert locked.client.find("sneak") is None


@pytest.mark.parametrize("path", [
    "/api/v1/functions", "/%61pi/v1/functions", "//api/v1/functions", "/api//v1/functions",
    "/api/v1/functions/", "/./api/v1/functions", "/function/../api/v1/functions",
    "/api/v1/%66unctions", "/API/v1/functions", "/api/v1/functions?token=x",
])
def test_no_path_spelling_reaches_the_api_without_the_token(locked: ServerProcess,
                                                            path: str) -> None:
    # Raw HTTP, so the client normalises nothing.
    with socket.create_connection(("127.0.0.1", locked.port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    assert status in (401, 404), data[:300]
    assert b'"items"' not in data


def test_cli_finds_the_token(locked: ServerProcess, tmp_path: Path) -> None:
    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if k != "ALLINONE_TOKEN"}
        return subprocess.run(
            [sys.executable, "-m", "allinone.cli", "--server", locked.url, *args],
            capture_output=True, text=True, timeout=60, env={**base, **env}, check=False)

    # From the state directory (a loopback server), from the environment, from a flag.
    assert cli("function", "list", ALLINONE_STATE_DIR=str(locked.state_dir)).returncode == 0
    assert cli("function", "list", ALLINONE_STATE_DIR=str(tmp_path),
               ALLINONE_TOKEN=locked.token()).returncode == 0
    assert cli("--token", locked.token(), "function", "list",
               ALLINONE_STATE_DIR=str(tmp_path)).returncode == 0
    denied = cli("function", "list", ALLINONE_STATE_DIR=str(tmp_path))
    assert denied.returncode == 1
    assert "needs its token" in denied.stderr and "HTTP 401" in denied.stderr, denied.stderr
