"""The API contract checked by a fuzzer: schemathesis against a live server.

Every operation of ``GET /openapi.json`` gets generated requests (valid and invalid,
a few hundred in all; ``-n`` examples per operation and phase, fixed seed so a failure
reproduces, ``$ALLINONE_FUZZ_SEED`` to vary it). Checks: all of schemathesis' checks
(responses conform to the schema: status, content type, headers, body; invalid input is
rejected; the token is enforced), with ``not_a_server_error`` allowing only the
documented 500/503/504 of invocations (``schemathesis.toml`` beside this file). The
server runs with ``--require-token`` so the bearer token in the contract is enforced
(on loopback it is otherwise not checked).

The served document must also be the committed contract (the unit test
``test_openapi.py`` checks that the code builds the committed one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from allinone.apiserver import openapi
from allinone.testing import ServerProcess, live_server

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
REPORTS = HERE / "reports"
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from live_server(tmp_path_factory, "fuzz-state", extra_args=("--require-token",))


def test_served_contract_is_the_committed_one(guarded: ServerProcess) -> None:
    served = guarded.http.get(guarded.url + "/openapi.json", timeout=10).json()
    committed = json.loads(Path(openapi.__file__).with_name("openapi.json").read_text())
    assert served == committed


def test_schemathesis_finds_nothing(guarded: ServerProcess, tmp_path: Path) -> None:
    REPORTS.mkdir(exist_ok=True)
    st = Path(sys.executable).with_name("st")
    seed = os.environ.get("ALLINONE_FUZZ_SEED", "1")
    cmd = [str(st), "--config-file", str(HERE / "schemathesis.toml"), "run",
           guarded.url + "/openapi.json", "--checks", "all", "-n", str(EXAMPLES_PER_OPERATION),
           "--seed", seed, "--workers", "1", "--request-timeout", "30",
           "--header", f"Authorization: Bearer {guarded.token()}",
           "--report", "junit", "--report-junit-path", str(REPORTS / "schemathesis.xml")]
    # cwd: schemathesis keeps a cache (.schemathesis/) where it runs
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    (REPORTS / "schemathesis.txt").write_text(out)
    assert proc.returncode == 0, out[-8000:] + "\n" + guarded.log_tail()
    # Every operation was exercised (the JUnit report has a test case per operation), but
    # the document itself, which schemathesis leaves out (the test above reads it).
    spec = guarded.http.get(guarded.url + "/openapi.json", timeout=10).json()
    operations = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    tested = {tc.get("name") for tc in
              ElementTree.parse(REPORTS / "schemathesis.xml").getroot().iter("testcase")}
    assert operations - tested == {"GET /openapi.json"}, out[-3000:]
