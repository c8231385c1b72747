"""``spec.network``: none by default, egress on request, anything else a clear 400."""

from __future__ import annotations

import pytest

from allinone import objects
from allinone.builder.reconciler import pod_template


@pytest.mark.parametrize(("user", "expected"), [
    ({}, "none"),
    ({"network": "none"}, "none"),
    ({"network": "egress"}, "egress"),
])
def test_network_modes(user: dict[str, object], expected: str) -> None:
    assert objects.normalize_spec(user)["network"] == expected


@pytest.mark.parametrize("bad", ["host", "bridge", "", None, 1, ["egress"]])
def test_other_networks_are_refused_naming_the_choices(bad: object) -> None:
    with pytest.raises(objects.ValidationError) as info:
        objects.normalize_spec({"network": bad})
    assert "spec.network" in str(info.value) and '"egress"' in str(info.value)


def test_an_update_keeps_the_network_unless_given() -> None:
    base = objects.normalize_spec({"network": "egress"})
    assert objects.normalize_spec({"timeoutSeconds": 5}, base)["network"] == "egress"


def test_egress_changes_the_pod_template_and_none_keeps_old_hashes() -> None:
    fn = {"spec": objects.normalize_spec({}), "metadata": {"generation": 1}}
    none_template, none_hash = pod_template(fn, "img")
    assert "network" not in none_template  # pods of before this field keep their hash
    fn["spec"]["network"] = "egress"
    egress_template, egress_hash = pod_template(fn, "img")
    assert egress_template["network"] == "egress" and egress_hash != none_hash
