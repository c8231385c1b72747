"""Shared test configuration: the repository root on sys.path for ``tests.*`` imports,
and fixtures more than one test module needs (the integration and browser tests share
``server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, live_server, load_module


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server (etcd, registry, Docker) for the session."""
    yield from live_server(tmp_path_factory, "allinone-state")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image pipeline's generated test images (fixtures/imagepipe/make_images.py)."""
    out = tmp_path_factory.mktemp("images")
    load_module(FIXTURES / "imagepipe" / "make_images.py", "make_images").make(out, large=True)
    return out
