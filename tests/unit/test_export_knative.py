"""The Knative export: annotations, value formats, and the Service against Knative's CRD.

The schema is Knative Serving's own Service CRD (../shared/knative/service-crd.yaml, see
its SOURCE.md); the test validates with jsonschema and, as a structural schema does,
refuses any field the schema does not declare (the API server would prune it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from allinone import objects
from allinone.export import knative

CRD = Path(__file__).resolve().parents[2] / ".." / "shared" / "knative" / "service-crd.yaml"
for candidate in (CRD, Path("/work/shared/knative/service-crd.yaml")):
    if candidate.is_file():
        CRD = candidate
        break
IMAGE = "registry.example:5000/fns/add@sha256:" + "a" * 64
GO_DURATION = re.compile(r"^\d+(\.\d+)?s$")

EVERY_KNOB = {
    "env": {"GREETING": "hi", "A_B": "1"},
    "timeoutSeconds": 30.5,
    "resources": {"memoryMiB": 512, "cpus": 0.5},
    "scaling": {
        "minScale": 1, "maxScale": 20, "initialScale": 2, "metric": "rps", "target": 12.5,
        "targetUtilizationPercentage": 80, "containerConcurrency": 4,
        "stableWindowSeconds": 90, "panicWindowPercentage": 20,
        "panicThresholdPercentage": 300, "maxScaleUpRate": 10, "maxScaleDownRate": 4,
        "scaleToZeroGracePeriodSeconds": 45, "scaleToZeroPodRetentionSeconds": 120,
        "scaleDownDelaySeconds": 15, "activationScale": 3, "targetBurstCapacity": -1,
    },
}


def function(name: str, user_spec: dict[str, Any], image: str | None = IMAGE) -> dict[str, Any]:
    fn = objects.new_object("Function", name, objects.normalize_spec(user_spec))
    fn["status"] = {"phase": "Ready", "image": image}
    return fn


def test_every_knob_becomes_its_annotation() -> None:
    svc = knative.service(function("add", EVERY_KNOB))
    a = "autoscaling.knative.dev/"
    assert svc["spec"]["template"]["metadata"]["annotations"] == {
        a + "class": "kpa.autoscaling.knative.dev",
        a + "metric": "rps",
        a + "target": "12.5",
        a + "target-utilization-percentage": "80",
        a + "window": "90s",
        a + "panic-window-percentage": "20",
        a + "panic-threshold-percentage": "300",
        a + "min-scale": "1",
        a + "max-scale": "20",
        a + "initial-scale": "2",
        a + "scale-down-delay": "15s",
        a + "activation-scale": "3",
        a + "target-burst-capacity": "-1",
        a + "scale-to-zero-pod-retention-period": "120s",
    }
    rev = svc["spec"]["template"]["spec"]
    assert (rev["containerConcurrency"], rev["timeoutSeconds"]) == (4, 31)
    [c] = rev["containers"]
    assert c["image"] == IMAGE
    assert c["env"] == [{"name": "A_B", "value": "1"}, {"name": "GREETING", "value": "hi"}]
    assert c["resources"] == {"limits": {"memory": "512Mi", "cpu": "500m"}}
    assert c["readinessProbe"] == {"httpGet": {"path": "/healthz"}}


def test_defaults_leave_out_what_knative_defaults_to() -> None:
    svc = knative.service(function("add", {}))
    a = "autoscaling.knative.dev/"
    # Target and max-scale always (Knative's defaults differ: 100 per pod and unlimited);
    # initial-scale 0 because Knative's default is 1.
    assert svc["spec"]["template"]["metadata"]["annotations"] == {
        a + "class": "kpa.autoscaling.knative.dev", a + "target": "10",
        a + "max-scale": "10", a + "initial-scale": "0"}
    assert "env" not in svc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("value", "text"), [(10, "10"), (10.0, "10"), (0.5, "0.5"),
                                              (0.01, "0.01"), (-1, "-1"), (1e6, "1000000")])
def test_numbers_are_strings_knative_parses(value: float, text: str) -> None:
    assert knative.number(value) == text
    assert float(text) == value


def test_value_formats() -> None:
    ann = knative.revision_annotations(objects.normalize_spec(EVERY_KNOB)["scaling"])
    durations = {"window", "scale-down-delay", "scale-to-zero-pod-retention-period"}
    for key, value in ann.items():
        assert isinstance(value, str), key
        short = key.removeprefix("autoscaling.knative.dev/")
        if short in durations:
            assert GO_DURATION.match(value), (key, value)
        elif short not in {"class", "metric"}:
            float(value)
    assert knative.duration(1.5) == "1.5s"


def test_reserved_env_is_refused() -> None:
    with pytest.raises(knative.ExportError, match=r"reserves the env name\(s\) \['K_SERVICE'\]"):
        knative.service(function("add", {"env": {"K_SERVICE": "x"}}))


def test_name_starting_with_a_digit_is_refused() -> None:
    with pytest.raises(knative.ExportError, match="must start with a letter"):
        knative.service(function("3d", {}))


def test_unbuilt_function_is_refused() -> None:
    with pytest.raises(knative.ExportError, match="no built image yet"):
        knative.service(function("add", {}, image=None))


def _uncomment(block: str) -> Any:
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("apiVersion:"))
    return yaml.safe_load("\n".join(lines[start:]))


def test_render_is_multi_document_with_the_cluster_settings_commented() -> None:
    fns = [function("add", EVERY_KNOB), function("echo", {})]
    text = knative.render(fns)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert [d["metadata"]["name"] for d in docs] == ["add", "echo"]
    assert all(d["kind"] == "Service" for d in docs)  # nothing else is applied
    assert knative.NO_EQUIVALENT in text
    head = text.split("---\n")[0]
    # The functions disagree on the cluster-wide rates: said, not guessed.
    assert "max-scale-up-rate differs between the functions (add: 10, echo: 1000)" in head
    assert "scale-to-zero-grace-period differs between the functions (add: 45s, echo: 30s)" \
        in head
    config = _uncomment(head)
    assert config["metadata"] == {"name": "config-autoscaler", "namespace": "knative-serving"}
    # echo has initialScale 0: a default cluster refuses it without this.
    assert config["data"] == {"allow-zero-initial-scale": "true"}


def test_one_function_cluster_settings() -> None:
    text = knative.render([function("add", EVERY_KNOB)])
    config = _uncomment(text.split("---\n")[0])
    assert config["data"] == {"scale-to-zero-grace-period": "45s", "max-scale-up-rate": "10",
                              "max-scale-down-rate": "4"}


def test_long_timeout_gets_the_config_defaults_note() -> None:
    text = knative.render([function("slow", {"timeoutSeconds": 900})])
    assert "max-revision-timeout-seconds: '900'" in text


def test_local_registry_image_is_flagged() -> None:
    text = knative.render([function("add", {}, image="127.0.0.1:5000/allinone/add@sha256:0")])
    assert "--push-to" in text


# --- against Knative's Service schema --------------------------------------------------


def _schema() -> dict[str, Any]:
    if not CRD.is_file():
        pytest.skip(f"Knative's Service CRD is not at {CRD} (see shared/knative/SOURCE.md)")
    crd = yaml.safe_load(CRD.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = v1["schema"]["openAPIV3Schema"]
    return schema


def _undeclared(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Fields a structural schema would prune: not declared, no preserve-unknown-fields."""
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        for k, v in value.items():
            if k not in props:
                out.append(f"{path}.{k}")
            else:
                out += _undeclared(v, props[k], f"{path}.{k}")
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += _undeclared(v, schema["items"], f"{path}[{i}]")
    return out


@pytest.mark.parametrize("spec", [EVERY_KNOB, {}, {"env": {"X": "1"}, "timeoutSeconds": 0.1}],
                         ids=["every-knob", "defaults", "tiny-timeout"])
def test_exported_service_validates_against_knatives_crd(spec: dict[str, Any]) -> None:
    schema = _schema()
    svc = knative.service(function("add", spec))
    jsonschema.Draft7Validator(schema).validate(svc)
    assert _undeclared(svc, schema, "") == []


def test_the_schema_check_can_fail() -> None:
    schema = _schema()
    svc = knative.service(function("add", {}))
    svc["spec"]["template"]["spec"]["containers"][0]["port"] = 8080  # a typo of "ports"
    assert _undeclared(svc, schema, "") == [".spec.template.spec.containers[0].port"]
    svc["spec"]["template"]["spec"]["timeoutSeconds"] = "60"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(svc)
