"""Integration fixtures: one real server (etcd, registry, Docker) for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone.testing import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(Path(tmp_path_factory.mktemp("allinone-state"))) as srv:
        yield srv
