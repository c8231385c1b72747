"""The fault matrix (issue 8): real ``allinone serve`` processes, real etcd, registry
and Docker, and real faults (SIGKILL, SIGTERM, malformed objects, hostile uploads).

Each module shares one server (a fresh registry costs a ~250 MB base-image push, which
dominates a test's time on a loaded machine); its tests run in file order, and each
leaves the server recovered for the next, which is itself part of what is proven. Every
test records what it measured (time to recover, requests lost) with :func:`record`;
the session writes those figures to ``tests/faults/reports/matrix.json`` and
``matrix.md`` (merged with rows of earlier runs, since files run one at a time), so a
note can quote them. The figures are observations, not bounds.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from allinone.services.process import read_pidfile
from allinone.testing import ServerProcess, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Started with the soft open-files limit systemd gives a service (1024): serve must
    # raise it itself, or the 2,000-client row fails (allinone.fdlimit).
    srv = ServerProcess(Path(tmp_path_factory.mktemp("faults")) / "state", nofile_soft=1024)
    srv.start()
    try:
        # The base image's ~250 MB go to the fresh registry first (minutes on a loaded
        # machine); builds wait for that push, so tests start after it.
        wait_for(lambda: registry_tags(srv, "allinone-base/python") == ["latest"], 600,
                 "the base image push")
        yield srv
    finally:
        srv.stop()
        srv.cleanup_containers()
        # A test may have SIGKILLed serve: stop what it left (etcd, registry).
        from allinone.services.process import stop_leftovers
        stop_leftovers(srv.state_dir / "run")


def registry_tags(server: ServerProcess, repo: str) -> list[str] | None:
    """Tags of ``repo`` in the server's registry; None while it does not answer (it is
    stopped for a second while its garbage is collected)."""
    try:
        resp = requests.get(f"http://{server.registry}/v2/{repo}/tags/list", timeout=5)
    except requests.ConnectionError:
        return None
    if resp.status_code == 404:
        return []
    tags: list[str] = resp.json().get("tags") or []
    return tags


def child_pid(server: ServerProcess, name: str) -> int:
    record = read_pidfile(server.state_dir / "run" / f"{name}.pid")
    assert record is not None and record.alive(), f"no live {name} recorded"
    return record.pid


def readyz(server: ServerProcess) -> dict[str, object]:
    try:
        resp = server.http.get(server.url + "/readyz", timeout=5)
    except Exception as exc:  # the server itself is down
        return {"status": f"unreachable: {exc}"}
    out: dict[str, object] = resp.json()
    return out


REPORTS = Path(__file__).parent / "reports"
# Rows measured in this session: row -> figures (written by the session fixture).
_measured: dict[str, dict[str, object]] = {}


def record(row: str, **figures: object) -> None:
    """What a test measured for one row of the matrix: printed, and kept for the report."""
    print(f"FAULT-MATRIX {row}: {json.dumps(figures)}")
    _measured[row] = {**figures,
                      "measured_at": datetime.datetime.now(datetime.UTC).isoformat(
                          timespec="seconds"),
                      "load_average_1m": round(os.getloadavg()[0], 2)}


def write_matrix_report(directory: Path, measured: dict[str, dict[str, object]]) -> None:
    """Merge ``measured`` into ``directory``/matrix.json (rows of earlier runs stay,
    rows measured again are replaced) and write matrix.md from the result."""
    if not measured:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "matrix.json"
    try:
        rows: dict[str, dict[str, object]] = json.loads(path.read_text())
    except (OSError, ValueError):
        rows = {}
    rows.update(measured)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # whole or not at all
    lines = ["# Fault matrix: what each row measured", "",
             "Written by tests/faults (conftest.record); observations, not bounds.", "",
             "| fault | measured | when (UTC), load |", "|---|---|---|"]
    for row in sorted(rows):
        figures = dict(rows[row])
        when = f"{figures.pop('measured_at', '?')}, {figures.pop('load_average_1m', '?')}"
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        lines.append(f"| {row} | {shown} | {when} |")
    (directory / "matrix.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session", autouse=True)
def matrix_report() -> Iterator[None]:
    yield
    write_matrix_report(Path(os.environ.get("ALLINONE_FAULT_REPORTS", REPORTS)), _measured)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.started, 2)
