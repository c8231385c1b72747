"""The runtime model: how long the parts the simulator does not run take.

The simulator runs the platform's decisions (KPA, pod choice, replica planning) for
real; what it cannot run (Docker, etcd, the HTTP hops) is a number from here:

- ``pod_start_ms``: a new pod, from the controller's create to Ready (container create +
  start + the shim answering ``/healthz``).
- ``create_ms``: the part of ``pod_start_ms`` that is Docker's container create: a pod
  that starts its function's standby container (created while the function was at
  zero) takes ``pod_start_ms - create_ms``.
- ``unpause_ms``: a parked (paused) pod, from the controller's create to Ready.
- ``parallel_starts``: how many container starts the Docker engine makes progress on at
  once; more wait in line (40 cold starts at once run about one after another here).
- ``activator_overhead_ms``: what the activator and the pod's shim add to each request
  on top of the function's own duration.
- ``poke_delay_ms``: from a request held at zero to the autoscaler's decision.
- ``sync_delay_ms``: from a new ``spec.replicas`` to the controller's plan (etcd write +
  watch delivery + work queue).

The defaults are the figures of DESIGN.md for this machine; ``allinone simulate
calibrate`` measures them on the real platform and saves a model file (JSON with these
keys and a ``measured`` section saying how), so simulation and reality share numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ModelError(ValueError):
    """A runtime model file that cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class RuntimeModel:
    pod_start_ms: float = 110.0
    create_ms: float = 20.0
    unpause_ms: float = 20.0
    parallel_starts: int = 1
    activator_overhead_ms: float = 0.5
    poke_delay_ms: float = 1.0
    sync_delay_ms: float = 2.0
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_start(self) -> float:
        return self.pod_start_ms / 1000.0

    @property
    def create(self) -> float:
        return self.create_ms / 1000.0

    @property
    def unpause(self) -> float:
        return self.unpause_ms / 1000.0

    @property
    def overhead(self) -> float:
        return self.activator_overhead_ms / 1000.0

    @property
    def poke_delay(self) -> float:
        return self.poke_delay_ms / 1000.0

    @property
    def sync_delay(self) -> float:
        return self.sync_delay_ms / 1000.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_NUMERIC = tuple(f.name for f in fields(RuntimeModel) if f.name != "measured")


def from_json(data: object, where: str = "runtime model") -> RuntimeModel:
    """A model from its JSON object; missing keys take the defaults."""
    if not isinstance(data, dict):
        raise ModelError(f"{where}: must be a JSON object with keys {list(_NUMERIC)}")
    unknown = set(data) - {*_NUMERIC, "measured"}
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {sorted(unknown)}; known: {list(_NUMERIC)}")
    values: dict[str, Any] = {}
    for key in _NUMERIC:
        if key not in data:
            continue
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ModelError(f"{where}: {key} must be a number, got {json.dumps(v)}")
        if key == "parallel_starts":
            if v < 1 or not float(v).is_integer():
                raise ModelError(f"{where}: parallel_starts must be a whole number >= 1, got {v}")
            v = int(v)
        elif v < 0:
            raise ModelError(f"{where}: {key} must be >= 0 milliseconds, got {v}")
        values[key] = v
    measured = data.get("measured", {})
    if not isinstance(measured, dict):
        raise ModelError(f"{where}: measured must be an object")
    return RuntimeModel(**values, measured=measured)


def load(path: Path) -> RuntimeModel:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read runtime model {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return from_json(data, str(path))


def save(model: RuntimeModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
