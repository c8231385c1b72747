"""Shared test configuration: the repository root on sys.path for ``tests.*`` imports,
and fixtures more than one test module needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from allinone.testing import FIXTURES, load_module


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image pipeline's generated test images (fixtures/imagepipe/make_images.py)."""
    out = tmp_path_factory.mktemp("images")
    load_module(FIXTURES / "imagepipe" / "make_images.py", "make_images").make(out, large=True)
    return out
