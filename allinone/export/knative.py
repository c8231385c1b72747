"""A Function as a Knative Serving ``Service``: the pure transformation.

:func:`service` maps one Function object to a ``serving.knative.dev/v1`` Service that a
Knative cluster accepts unchanged; :func:`render` writes several as one multi-document
YAML with the cluster-wide settings as a commented ``config-autoscaler`` ConfigMap.
Nothing here does I/O; copying the image is :mod:`allinone.export.registry`.

What goes where (Knative's names; a value equal to Knative's default is left out):

- per revision, as ``autoscaling.knative.dev/*`` annotations on ``spec.template``:
  class (always ``kpa.autoscaling.knative.dev``), metric, target (always: Knative's
  default depends on containerConcurrency), target-utilization-percentage, window,
  panic-window-percentage, panic-threshold-percentage, min-scale, max-scale (always:
  Knative's default is unlimited), initial-scale, scale-down-delay, activation-scale,
  target-burst-capacity, scale-to-zero-pod-retention-period. Durations are Go
  durations (``"60s"``), numbers are strings (``"10"``, ``"0.5"``).
- the revision spec: containerConcurrency, timeoutSeconds (whole seconds, rounded up),
  the container's image, env, memory/CPU limits and the ``GET /healthz`` readiness probe.
  No port: Knative's default 8080 is what it sets ``$PORT`` to and the shim listens on.
- cluster-wide in Knative (config-autoscaler): scale-to-zero-grace-period,
  max-scale-up-rate, max-scale-down-rate, and allow-zero-initial-scale ``"true"`` when
  initialScale is 0 (a default cluster refuses initial-scale 0). They are written as a
  commented ConfigMap, never applied silently to someone's cluster.

Invariants: the output only uses fields of Knative's Service schema
(tests/unit/test_export_knative.py validates it against the CRD); a function Knative
would refuse (a reserved env name) raises :class:`ExportError` rather than producing a
Service the cluster rejects.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from allinone import objects

ANNOTATION = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"
# Knative rejects these env names in a user container (k8s_validation.go reservedEnvVars).
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
# Knative's config-defaults max-revision-timeout-seconds.
KNATIVE_MAX_TIMEOUT = 600
NO_EQUIVALENT = ("# Workflows and triggers have no Knative Serving equivalent; they are not "
                 "exported.")

# Knative's defaults for the per-revision annotations (config-autoscaler's defaults).
_KNATIVE_DEFAULTS: dict[str, str] = {
    "metric": "concurrency",
    "target-utilization-percentage": "70",
    "window": "60s",
    "panic-window-percentage": "10",
    "panic-threshold-percentage": "200",
    "min-scale": "0",
    "initial-scale": "1",
    "scale-down-delay": "0s",
    "target-burst-capacity": "211",
    "scale-to-zero-pod-retention-period": "0s",
}
# Knative's config-autoscaler defaults for the cluster-wide settings.
_CLUSTER_DEFAULTS: dict[str, str] = {
    "scale-to-zero-grace-period": "30s",
    "max-scale-up-rate": "1000",
    "max-scale-down-rate": "2",
    "allow-zero-initial-scale": "false",
}


class ExportError(ValueError):
    """The function cannot be expressed as a Knative Service; the message says why."""


def number(value: float) -> str:
    """A number as Knative parses it: 10 -> "10", 0.5 -> "0.5", 1e-2 -> "0.01"."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def duration(seconds: float) -> str:
    """Seconds as a Go duration: 60 -> "60s", 1.5 -> "1.5s"."""
    return number(seconds) + "s"


def _quantity_cpu(cpus: float) -> str:
    return number(cpus) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def revision_annotations(scaling: Mapping[str, Any]) -> dict[str, str]:
    """The autoscaling annotations of one function's scaling block."""
    s = {**objects.DEFAULT_SCALING, **scaling}
    values = {
        "class": KPA_CLASS,
        "metric": str(s["metric"]),
        "target": number(s["target"]),
        "target-utilization-percentage": number(s["targetUtilizationPercentage"]),
        "window": duration(s["stableWindowSeconds"]),
        "panic-window-percentage": number(s["panicWindowPercentage"]),
        "panic-threshold-percentage": number(s["panicThresholdPercentage"]),
        "min-scale": number(s["minScale"]),
        "max-scale": number(s["maxScale"]),
        "initial-scale": number(s["initialScale"]),
        "scale-down-delay": duration(s["scaleDownDelaySeconds"]),
        # 1 is allinone's "off"; Knative refuses an explicit 1.
        "activation-scale": number(s["activationScale"]) if s["activationScale"] > 1 else "",
        "target-burst-capacity": number(s["targetBurstCapacity"]),
        "scale-to-zero-pod-retention-period": duration(s["scaleToZeroPodRetentionSeconds"]),
    }
    return {ANNOTATION + k: v for k, v in values.items()
            if v and _KNATIVE_DEFAULTS.get(k) != v}


def cluster_settings(scaling: Mapping[str, Any]) -> dict[str, str]:
    """The config-autoscaler values one function needs (cluster-wide in Knative)."""
    s = {**objects.DEFAULT_SCALING, **scaling}
    return {
        "scale-to-zero-grace-period": duration(s["scaleToZeroGracePeriodSeconds"]),
        "max-scale-up-rate": number(s["maxScaleUpRate"]),
        "max-scale-down-rate": number(s["maxScaleDownRate"]),
        "allow-zero-initial-scale": "true" if s["initialScale"] == 0 else "false",
    }


def service(fn: Mapping[str, Any], image: str | None = None) -> dict[str, Any]:
    """The Knative Service of one Function object (``image`` overrides status.image)."""
    name = fn["metadata"]["name"]
    spec = fn["spec"]
    image = image or fn.get("status", {}).get("image")
    if not image:
        raise ExportError(f"function {name!r} has no built image yet (phase "
                          f"{fn.get('status', {}).get('phase', '?')}); wait for it to be Ready")
    if not name[:1].isalpha():
        # Knative names Kubernetes Services after it, and those are DNS-1035 labels.
        raise ExportError(f"function {name!r}: a Knative Service name must start with a "
                          "letter (DNS-1035); deploy it under a name like 'fn-" + name + "'")
    env = dict(spec.get("env") or {})
    reserved = sorted(RESERVED_ENV & set(env))
    if reserved:
        raise ExportError(f"function {name!r}: Knative reserves the env name(s) {reserved}; "
                          "rename them before exporting")
    scaling = objects.scaling(spec)
    resources = {**objects.DEFAULT_SPEC["resources"], **(spec.get("resources") or {})}
    container: dict[str, Any] = {
        "image": image,
        "readinessProbe": {"httpGet": {"path": "/healthz"}},
        "resources": {"limits": {"memory": f"{int(resources['memoryMiB'])}Mi",
                                 "cpu": _quantity_cpu(float(resources["cpus"]))}},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    timeout = spec.get("timeoutSeconds", objects.DEFAULT_SPEC["timeoutSeconds"])
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": revision_annotations(scaling)},
                "spec": {
                    "containerConcurrency": int(scaling["containerConcurrency"]),
                    "timeoutSeconds": max(1, math.ceil(float(timeout))),
                    "containers": [container],
                },
            },
        },
    }


def _commented(text: str, prose: bool = False) -> str:
    lines = textwrap.wrap(text, 86) if prose else text.splitlines()
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _cluster_snippet(fns: Sequence[Mapping[str, Any]]) -> str:
    per_fn = {fn["metadata"]["name"]: cluster_settings(objects.scaling(fn["spec"]))
              for fn in fns}
    data: dict[str, str] = {}
    notes: list[str] = []
    for key, default in _CLUSTER_DEFAULTS.items():
        values = {settings[key] for settings in per_fn.values()}
        if values == {default}:
            continue
        if len(values) == 1:
            data[key] = values.pop()
        else:
            if key == "allow-zero-initial-scale":
                data[key] = "true"  # needed by any function with initialScale 0
                continue
            which = ", ".join(f"{n}: {s[key]}" for n, s in sorted(per_fn.items()))
            notes.append(f"{key} differs between the functions ({which}); Knative has one "
                         "value per cluster, pick one")
    head = ("Cluster-wide in Knative: the config-autoscaler ConfigMap of knative-serving "
            "holds these for every Service. To match allinone, merge them into it (e.g. "
            "kubectl edit configmap config-autoscaler -n knative-serving).")
    if not data and not notes:
        return _commented(head + " Nothing to change: Knative's defaults match.", prose=True)
    body = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "config-autoscaler",
                                        "namespace": "knative-serving"},
                           "data": data}, sort_keys=False, default_flow_style=False)
    return ("".join(_commented(t, prose=True) for t in [head, *notes])
            + _commented(body))


def _timeout_snippet(fns: Sequence[Mapping[str, Any]]) -> str:
    longest = max((math.ceil(float(fn["spec"].get("timeoutSeconds", 0))) for fn in fns),
                  default=0)
    if longest <= KNATIVE_MAX_TIMEOUT:
        return ""
    return _commented(
        f"timeoutSeconds {longest} is above Knative's default max-revision-timeout-seconds "
        f"({KNATIVE_MAX_TIMEOUT}); raise it in the config-defaults ConfigMap:",
        prose=True) + _commented(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "config-defaults",
                                       "namespace": "knative-serving"},
                          "data": {"max-revision-timeout-seconds": str(longest)}},
                         sort_keys=False))


def render(fns: Iterable[Mapping[str, Any]], images: Mapping[str, str] | None = None) -> str:
    """Multi-document YAML: a Service per function, the cluster-wide settings as comments.

    ``images`` maps a function name to the image to use (after ``--push-to``).
    """
    fns = list(fns)
    if not fns:
        raise ExportError("no functions to export")
    images = images or {}
    header = [NO_EQUIVALENT + "\n", _cluster_snippet(fns), _timeout_snippet(fns)]
    docs = []
    for fn in fns:
        svc = service(fn, images.get(fn["metadata"]["name"]))
        image = svc["spec"]["template"]["spec"]["containers"][0]["image"]
        note = ""
        if image.startswith(("127.0.0.1", "localhost", "[::1]")):
            note = _commented(f"{image} is allinone's local registry, which a cluster cannot "
                              "pull from: export with --push-to REGISTRY/PREFIX", prose=True)
        docs.append(note + yaml.safe_dump(svc, sort_keys=False, default_flow_style=False))
    return "".join(h for h in header if h) + "---\n" + "---\n".join(docs)
