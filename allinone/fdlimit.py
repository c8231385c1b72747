"""The process's open-files limit (``RLIMIT_NOFILE``): raised to its hard limit at start.

Every client connection of the API, every pooled connection to a pod's socket, every
log file and etcd/registry connection is a descriptor. Measured (tests/faults, 2,000
concurrent clients on a warm function, 20 pods): the server holds about 4,500 of them.
The usual *soft* limit is 1024 (systemd's default for services, many login shells);
with it, 2,000 clients made ``accept()`` fail with EMFILE, Sanic closed about 12 % of the
connections unanswered, the supervisor's health checks of etcd and the registry failed
and saving a pod's log raised "Too many open files".

The soft limit may be raised up to the hard limit without privilege (the hard limit
is what the administrator allows), so ``allinone serve`` does that first, and the load
generator does the same for its own thousands of client connections. The children
(etcd, the registry) inherit the raised limit.

Invariants: never lowers a limit; never fails the caller (a refused ``setrlimit``
leaves the limit as it was and the caller can still warn); Linux semantics (an
unlimited hard limit is not accepted for RLIMIT_NOFILE, so the kernel's own cap
``fs.nr_open`` is used instead).
"""

from __future__ import annotations

import resource
from pathlib import Path

# Below this the server warns at start: about half goes to clients, half to pod
# connections (at most POD_MAX_CONNECTIONS per pod), so 8192 serves ~3,000 clients.
RECOMMENDED_NOFILE = 8192

_NR_OPEN = Path("/proc/sys/fs/nr_open")


def _ceiling(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1024 * 1024  # Linux's default fs.nr_open


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft open-files limit to its hard limit.

    Returns ``(before, after)``: the soft limit before and after (equal when it was
    already at the hard limit or the kernel refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft
