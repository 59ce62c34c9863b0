"""The chart's side of zero failed admissions through upgrades and node drains (issue 15):
rolling update that never drops below the replica count, the PodDisruptionBudget, spread across
nodes, and shutdown timing the kubelet cannot cut short."""

from __future__ import annotations

import helm_python as helm
import pytest

from conftest import render


def _env(r) -> dict[str, str]:
    (c,) = r.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def test_rollout_never_drops_below_the_replica_count():
    r = render({})
    d = r.one("Deployment")["spec"]
    assert d["replicas"] == 2
    assert d["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pdb = r.one("PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == d["selector"]["matchLabels"]
    pod = d["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == d["selector"]["matchLabels"]


def test_shutdown_timing_reaches_promfed_and_fits_the_grace_period():
    r = render({})
    env = _env(r)
    assert env["PROMFED_SHUTDOWN_DELAY"] == "5s"
    assert env["PROMFED_SHUTDOWN_GRACE"] == "20s"
    assert r.one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    r = render({"shutdown": {"delaySeconds": 10, "graceSeconds": 15}, "terminationGracePeriodSeconds": 26})
    assert _env(r)["PROMFED_SHUTDOWN_DELAY"] == "10s"
    assert _env(r)["PROMFED_SHUTDOWN_GRACE"] == "15s"


@pytest.mark.parametrize(
    "values",
    [
        {"terminationGracePeriodSeconds": 25},
        {"terminationGracePeriodSeconds": 10},
        {"shutdown": {"delaySeconds": 20}},
        {"shutdown": {"delaySeconds": 5, "graceSeconds": 40}, "terminationGracePeriodSeconds": 45},
    ],
)
def test_grace_period_not_larger_than_delay_plus_grace_is_refused(values):
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds .* must be larger than"):
        render(values)


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"shutdown": {"delaySeconds": -1}}, "/shutdown/delaySeconds"),
        ({"shutdown": {"graceSeconds": 0}}, "/shutdown/graceSeconds"),
        ({"shutdown": {"delay": 5}}, "additional properties 'delay' not allowed"),
    ],
)
def test_bad_shutdown_values_fail_in_the_schema(values, path):
    with pytest.raises(helm.HelmValuesError, match=path):
        render(values)
