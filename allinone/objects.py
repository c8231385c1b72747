"""The object model: Function, ReplicaSet and Pod as Kubernetes-shaped JSON dicts.

Everything here is pure: building objects, their etcd keys, the Function spec with its
defaults, and validation of a user's spec. Validation raises :class:`ValidationError`
whose message names the field and says what to fix, so the apiserver can hand it to the
user verbatim (HTTP 400).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

API_VERSION = "allinone/v1"
NAMESPACE = "serverless"
PREFIX = "/allinone"
FUNCTIONS_PREFIX = f"{PREFIX}/functions/"
REPLICASETS_PREFIX = f"{PREFIX}/replicasets/{NAMESPACE}/"
PODS_PREFIX = f"{PREFIX}/pods/{NAMESPACE}/"
WORKFLOWS_PREFIX = f"{PREFIX}/workflows/"
EXECUTIONS_PREFIX = f"{PREFIX}/executions/"
HISTORY_PREFIX = f"{PREFIX}/history/"

# Every pattern here is applied with ``fullmatch``: ``$`` also matches before a final
# newline, and a function named "nl2\n" once got in and could never be deleted.
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63
# A module or function name; a handler is one or more of them joined with dots.
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
HANDLER_RE = re.compile(rf"(?:{IDENT}\.)*{IDENT}")
ENV_KEY_RE = re.compile(IDENT)
# Bounds on spec.env, in UTF-8 bytes: a 200 KB value crash-looped the pod (the engine
# and the kernel take it, the shim's exec did not) and 2 MiB reached etcd's request
# limit as a raw gRPC error. Real configuration is far smaller.
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 64 * 1024

# Phases
BUILDING, READY, FAILED = "Building", "Ready", "Failed"


class ValidationError(ValueError):
    """Bad user input; the message says what was wrong and how to fix it."""


def function_key(name: str) -> str:
    return f"{FUNCTIONS_PREFIX}{name}"


def replicaset_key(name: str) -> str:
    return f"{REPLICASETS_PREFIX}{name}"


def pod_key(name: str) -> str:
    return f"{PODS_PREFIX}{name}"


def workflow_key(name: str) -> str:
    return f"{WORKFLOWS_PREFIX}{name}"


def execution_key(workflow: str, execution_id: str) -> str:
    return f"{EXECUTIONS_PREFIX}{workflow}/{execution_id}"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(wall: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (as written by the two functions above)."""
    return datetime.fromisoformat(text).timestamp()


def new_object(kind: str, name: str, spec: Obj, *, namespace: str | None = None,
               labels: dict[str, str] | None = None) -> Obj:
    """A fresh object; the store fills ``resourceVersion`` when it is written."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "0",
            "generation": 1,
            "creationTimestamp": now_rfc3339(),
            "labels": dict(labels or {}),
        },
        "spec": spec,
        "status": {},
    }


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("name is required: give the function a DNS-1123 name like 'add'")
    if len(name) > MAX_NAME:
        raise ValidationError(f"name {name[:MAX_NAME]!r}... is {len(name)} characters long; "
                              f"at most {MAX_NAME}")
    if not NAME_RE.fullmatch(name):
        raise ValidationError(
            f"name {name!r} is not a DNS-1123 label: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


# ---------------------------------------------------------------------------
# Function spec

DEFAULT_SCALING: dict[str, int | float | str] = {
    "minScale": 0,
    "maxScale": 10,
    "initialScale": 0,
    "metric": "concurrency",
    "target": 10,
    "targetUtilizationPercentage": 70,
    "containerConcurrency": 0,
    "stableWindowSeconds": 60,
    "panicWindowPercentage": 10,
    "panicThresholdPercentage": 200,
    "maxScaleUpRate": 1000,
    "maxScaleDownRate": 2,
    "scaleToZeroGracePeriodSeconds": 30,
    "scaleToZeroPodRetentionSeconds": 0,
    "scaleDownDelaySeconds": 0,
    "activationScale": 1,
    "targetBurstCapacity": 211,
}

# The scaling metrics (Knative's autoscaling.knative.dev/metric values for the KPA).
SCALING_METRICS = ("concurrency", "rps")

# (type, minimum, maximum, minimum exclusive) of every numeric scaling field, inclusive
# unless marked. The ranges are Knative's (annotation_validation.go and the
# config-autoscaler checks): window 6 s-1 h in whole seconds, panic window 1-100 %,
# panic threshold 110-1000 %, utilization 1-100 %, target >= 0.01, rates > 1, grace > 0,
# delay and retention 0-1 h, target burst capacity >= 0 or -1. Where Knative has no
# upper bound one machine needs one (scale counts, target, grace, burst capacity).
_SCALING_BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    "minScale": (int, 0, 1000, False),
    "maxScale": (int, 1, 1000, False),
    "initialScale": (int, 0, 1000, False),
    "target": (float, 0.01, 1e6, False),
    "targetUtilizationPercentage": (float, 1, 100, False),
    "containerConcurrency": (int, 0, 1000, False),
    "stableWindowSeconds": (int, 6, 3600, False),
    "panicWindowPercentage": (float, 1, 100, False),
    "panicThresholdPercentage": (float, 110, 1000, False),
    "maxScaleUpRate": (float, 1, 1e6, True),
    "maxScaleDownRate": (float, 1, 1e6, True),
    "scaleToZeroGracePeriodSeconds": (float, 0, 3600, True),
    "scaleToZeroPodRetentionSeconds": (float, 0, 3600, False),
    "scaleDownDelaySeconds": (int, 0, 3600, False),
    "activationScale": (int, 1, 1000, False),
    "targetBurstCapacity": (float, -1, 1e6, False),
}
_SCALING_FIELDS = {*_SCALING_BOUNDS, "metric"}

DEFAULT_SPEC: Obj = {
    "handler": "run",
    "env": {},
    "timeoutSeconds": 60,
    "resources": {"memoryMiB": 256, "cpus": 1.0},
    "scaling": DEFAULT_SCALING,
    "network": "none",
}
# A pod's network: "none" (no interface but loopback: the default) or "egress" (Docker's
# default bridge, for functions that call out). The platform reaches a pod only through
# its Unix socket either way, and listens on loopback only, so egress reaches nothing
# of the platform.
NETWORK_MODES = ("none", "egress")

_TOP_FIELDS = {"handler", "env", "timeoutSeconds", "resources", "scaling", "source", "network"}
# Variables the runtime shim owns; a user value would break the pod.
RESERVED_ENV = {"ALLINONE_HANDLER", "ALLINONE_PORT", "ALLINONE_SOCKET", "PYTHONPATH"}


def _number(field: str, value: object, kind: type, lo: float, hi: float,
            lo_exclusive: bool = False) -> int | float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value)):
        raise ValidationError(f"spec.{field} must be a number, got {json.dumps(value)}")
    if kind is int and not float(value).is_integer():
        raise ValidationError(f"spec.{field} must be a whole number, got {value}")
    if lo_exclusive and not lo < value <= hi:
        raise ValidationError(
            f"spec.{field} must be greater than {lo:g} and at most {hi:g}, got {value}")
    if not lo <= value <= hi:
        raise ValidationError(f"spec.{field} must be between {lo:g} and {hi:g}, got {value}")
    return int(value) if kind is int else float(value)


def _check_env(env: dict[Any, Any]) -> None:
    total = 0
    for k, v in env.items():
        if not isinstance(k, str) or not ENV_KEY_RE.fullmatch(k):
            raise ValidationError(
                f"spec.env key {k!r} is not a valid environment variable name: use letters, "
                "digits and '_', not starting with a digit")
        if k in RESERVED_ENV:
            raise ValidationError(
                f"spec.env.{k} is reserved by the runtime; choose another name")
        if not isinstance(v, str):
            raise ValidationError(f"spec.env.{k} must be a string, got {json.dumps(v)}")
        if "\0" in v:
            raise ValidationError(f"spec.env.{k} contains a NUL character, which an "
                                  "environment variable cannot hold; remove it")
        try:
            size = len(v.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
            raise ValidationError(f"spec.env.{k} is not valid Unicode text; remove the "
                                  "unpaired surrogate escape") from None
        if size > MAX_ENV_VALUE_BYTES:
            raise ValidationError(
                f"spec.env.{k} is {size} bytes; a value may be at most "
                f"{MAX_ENV_VALUE_BYTES} bytes ({MAX_ENV_VALUE_BYTES // 1024} KiB): put large "
                "data in the function's source or fetch it at run time")
        total += len(k) + 1 + size
    if total > MAX_ENV_TOTAL_BYTES:
        raise ValidationError(
            f"spec.env is {total} bytes in all; the limit is {MAX_ENV_TOTAL_BYTES} bytes "
            f"({MAX_ENV_TOTAL_BYTES // 1024} KiB) for all keys and values together: move "
            "large values into the function's source")


def normalize_spec(user: object, base: Obj | None = None) -> Obj:
    """Merge a user's (partial) spec over ``base`` (default: the defaults) and check it.

    Unknown fields are errors rather than silently ignored, so a typo such as
    ``maxscale`` is reported instead of leaving the user puzzled by the default.
    ``source`` is owned by the server and is never taken from the user.
    """
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise ValidationError("spec must be a JSON object, e.g. {\"timeoutSeconds\": 30}")
    spec = copy.deepcopy(base if base is not None else DEFAULT_SPEC)
    unknown = set(user) - _TOP_FIELDS
    if unknown:
        raise ValidationError(
            f"spec has unknown field(s) {sorted(unknown)}; known fields: {sorted(_TOP_FIELDS)}"
        )
    if "source" in user:
        raise ValidationError("spec.source is set by the server from the uploaded file; remove it")

    if "handler" in user:
        h = user["handler"]
        if not isinstance(h, str) or not HANDLER_RE.fullmatch(h):
            raise ValidationError(
                "spec.handler must be a Python name such as 'run' or 'module.function', "
                f"got {json.dumps(h)}"
            )
        spec["handler"] = h

    if "env" in user:
        env = user["env"]
        if not isinstance(env, dict):
            raise ValidationError('spec.env must be an object of strings, e.g. {"KEY": "value"}')
        _check_env(env)
        spec["env"] = dict(env)

    if "timeoutSeconds" in user:
        spec["timeoutSeconds"] = _number("timeoutSeconds", user["timeoutSeconds"], float, 0.1, 3600)

    if "resources" in user:
        res = user["resources"]
        if not isinstance(res, dict):
            raise ValidationError('spec.resources must be an object, e.g. {"memoryMiB": 256}')
        extra = set(res) - {"memoryMiB", "cpus"}
        if extra:
            raise ValidationError(f"spec.resources has unknown field(s) {sorted(extra)}; "
                                  "known: ['cpus', 'memoryMiB']")
        if "memoryMiB" in res:
            spec["resources"]["memoryMiB"] = _number(
                "resources.memoryMiB", res["memoryMiB"], int, 16, 65536)
        if "cpus" in res:
            spec["resources"]["cpus"] = _number("resources.cpus", res["cpus"], float, 0.05, 64)

    if "network" in user:
        if user["network"] not in NETWORK_MODES:
            raise ValidationError(
                f"spec.network must be \"none\" (no network: the default) or \"egress\" "
                f"(outbound connections only), got {json.dumps(user['network'])}")
        spec["network"] = user["network"]

    if "scaling" in user:
        sc = user["scaling"]
        if not isinstance(sc, dict):
            raise ValidationError('spec.scaling must be an object, e.g. {"maxScale": 5}')
        extra = set(sc) - _SCALING_FIELDS
        if extra:
            raise ValidationError(
                f"spec.scaling has unknown field(s) {sorted(extra)}; "
                f"known: {sorted(_SCALING_FIELDS)}"
            )
        for k, v in sc.items():
            if k == "metric":
                if v not in SCALING_METRICS:
                    raise ValidationError(
                        f"spec.scaling.metric must be one of {list(SCALING_METRICS)}, "
                        f"got {json.dumps(v)}")
                spec["scaling"][k] = v
                continue
            kind, lo, hi, lo_exclusive = _SCALING_BOUNDS[k]
            spec["scaling"][k] = _number(f"scaling.{k}", v, kind, lo, hi, lo_exclusive)

    s = spec["scaling"] = scaling(spec)
    tbc = s["targetBurstCapacity"]
    if tbc < 0 and tbc != -1:
        raise ValidationError(
            f"spec.scaling.targetBurstCapacity must be at least 0, or -1 for unlimited, got {tbc}")
    act = s["activationScale"]
    if act != 1 and not max(2, s["minScale"]) <= act <= s["maxScale"]:
        raise ValidationError(
            f"spec.scaling.activationScale must be 1 (off) or between max(2, minScale) = "
            f"{max(2, s['minScale'])} and maxScale {s['maxScale']}, got {act}")
    if s["minScale"] > s["maxScale"]:
        raise ValidationError(
            f"spec.scaling.minScale ({s['minScale']}) must not exceed maxScale ({s['maxScale']})"
        )
    if s["initialScale"] > s["maxScale"]:
        raise ValidationError(
            f"spec.scaling.initialScale ({s['initialScale']}) must not exceed maxScale "
            f"({s['maxScale']})"
        )
    return spec


# ---------------------------------------------------------------------------
# Shape checks of stored objects
#
# etcd may hold an object no current code path writes (an older version's, a hand
# edit, a bug). Loops check the shape first and skip what fails, with the key and the
# reason in the log, so one bad object never stops a loop (see allinone.informer).


def _field(obj: object, path: str, kind: type | tuple[type, ...]) -> None:
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{path} is missing")
        value = value[part]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        want = getattr(kind, "__name__", str(kind))
        raise ValueError(f"{path} is {type(value).__name__}, not {want}")


def check_function(obj: Obj) -> None:
    """ValueError saying what is wrong when ``obj`` is not a usable Function."""
    _field(obj, "metadata.name", str)
    _field(obj, "metadata.generation", int)
    _field(obj, "spec", dict)
    _field(obj, "spec.source.sha256", str)
    _field(obj, "spec.source.filename", str)
    _field(obj, "status", dict)
    for key in ("scaling", "resources", "env"):
        if key in obj["spec"] and not isinstance(obj["spec"][key], dict):
            raise ValueError(f"spec.{key} is not an object")


def check_replicaset(obj: Obj) -> None:
    """ValueError saying what is wrong when ``obj`` is not a usable ReplicaSet."""
    _field(obj, "metadata.name", str)
    _field(obj, "spec", dict)
    _field(obj, "spec.replicas", int)


def scaling(spec: Obj) -> Obj:
    """The scaling block with defaults filled in (for objects written by older versions)."""
    return {**DEFAULT_SCALING, **spec.get("scaling", {})}


def template_hash(template: Obj) -> str:
    """A short stable hash of a pod template; pods record it to tell generations apart."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]
