"""Integration fixtures: one real server (etcd, registry, Docker) for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone.testing import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("allinone-state")))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.cleanup_containers()
