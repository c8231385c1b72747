"""Settings for one ``allinone serve`` process, with the defaults a user gets.

Everything that locates state or a service lives here so that tests can run a whole
server in a temporary state directory on free ports next to a developer's own server.
``instance`` is derived from the state directory: containers are labelled with it so
two servers on one Docker engine never adopt or remove each other's pods.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from allinone.activator.throttler import QUEUE_LIMIT
from allinone.auth import TOKEN_FILENAME
from allinone.budget import DEFAULT_MAX_PODS_PER_FUNCTION

DEFAULT_STATE_DIR = Path(os.environ.get("ALLINONE_STATE_DIR", "~/.local/share/allinone"))
DEFAULT_BASE_IMAGE = "allinone/python-base:bookworm"
# A pullable alternative the setup uses when Docker Hub is reachable.
PULLABLE_BASE_IMAGE = "python:3.11-slim"
# How often the pod sampler reads every pod's CPU and memory (allinone/usage.py).
USAGE_PERIOD_SECONDS = 2.0


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = field(default_factory=lambda: DEFAULT_STATE_DIR.expanduser())
    etcd_port: int = 2379
    registry_port: int = 5000
    # When set, use these running services instead of starting embedded ones.
    etcd_url: str | None = None
    registry: str | None = None
    base_image: str = os.environ.get("ALLINONE_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    autoscaler_tick_seconds: float = 2.0
    # Keep a scaled-down pod paused this long for a ~20 ms resume; 0 = remove at once.
    keep_paused_seconds: float = 0.0
    # Keep one container per function at zero: "frozen" (started, healthy, paused: a
    # cold start only resumes it), "created" (a cold start only starts it) or "off"
    # (allinone/kubelet/kubelet.py, "Standby containers").
    standby: str = "frozen"
    max_upload_bytes: int = 50 * 1024 * 1024
    max_unzipped_bytes: int = 200 * 1024 * 1024
    # Requests held per function while it scales from zero or waits for a free slot.
    queue_limit: int = QUEUE_LIMIT
    # On SIGTERM, how long in-flight invocations may take to finish before shutdown
    # goes on without them.
    drain_seconds: float = 30.0
    # Admission limits (allinone/budget.py): the sum of memoryMiB over all pods (None:
    # a share of the host's memory) and the most pods one function may run.
    pod_memory_budget_mib: int | None = None
    max_pods_per_function: int = DEFAULT_MAX_PODS_PER_FUNCTION
    # Require the bearer token on /api/ even on a loopback host (always required on any
    # other host; allinone/auth.py).
    require_token: bool = False
    # The pod sampler's period; 0 turns it off (no status.usage, no pod CPU/memory
    # metrics): how its own cost is measured (``python -m loadtests.bench --only
    # dashboard --sampler-seconds 30``).
    usage_period_seconds: float = USAGE_PERIOD_SECONDS

    @property
    def instance(self) -> str:
        raw = str(self.state_dir.expanduser().resolve()).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    @property
    def etcd_endpoint(self) -> str:
        return self.etcd_url or f"http://127.0.0.1:{self.etcd_port}"

    @property
    def registry_address(self) -> str:
        return self.registry or f"127.0.0.1:{self.registry_port}"

    @property
    def sources_dir(self) -> Path:
        return self.state_dir / "sources"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        """One directory per pod, holding its Unix socket (see allinone.kubelet.poddir)."""
        return self.state_dir / "pods"

    @property
    def token_path(self) -> Path:
        return self.state_dir / TOKEN_FILENAME
