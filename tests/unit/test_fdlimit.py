"""allinone.fdlimit: the soft open-files limit goes up to the hard one, never down."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone import fdlimit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    """This process's limits, restored after the test (raising soft needs no privilege)."""
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    setrlimit = resource.setrlimit  # the real one, even if a test replaced it
    try:
        yield saved
    finally:
        setrlimit(resource.RLIMIT_NOFILE, saved)


def test_a_soft_limit_below_the_hard_one_is_raised_to_it(limits: tuple[int, int]) -> None:
    _, hard = limits
    low = min(1024, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    assert fdlimit.raise_open_files_limit() == (low, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_soft_limit_at_the_hard_one_is_left(limits: tuple[int, int]) -> None:
    _, hard = limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert fdlimit.raise_open_files_limit() == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_refused_raise_leaves_the_limit_and_says_so(limits: tuple[int, int],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, hard = limits
    low = min(1024, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    def refuse(which: int, values: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert fdlimit.raise_open_files_limit() == (low, low)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (low, hard)


@pytest.mark.parametrize(("hard", "nr_open", "expected"), [
    (4096, "999\n", 4096),  # a finite hard limit is the ceiling
    (resource.RLIM_INFINITY, "2097152\n", 2097152),  # unlimited: the kernel's fs.nr_open
    (resource.RLIM_INFINITY, None, 1024 * 1024),  # no /proc: Linux's default nr_open
    (resource.RLIM_INFINITY, "garbage", 1024 * 1024),
])
def test_the_ceiling(hard: int, nr_open: str | None, expected: int, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nr_open"
    if nr_open is not None:
        path.write_text(nr_open)
    monkeypatch.setattr(fdlimit, "_NR_OPEN", path)
    assert fdlimit._ceiling(hard) == expected
