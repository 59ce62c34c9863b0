"""Chart conventions (issue 13): one namespace helper, the schema comment, Chart.yaml metadata,
and the README sections a chart user looks for."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import CHART, ci_scenarios, ci_values, render

CLUSTER_SCOPED = {"MutatingWebhookConfiguration"}
OTHER_NAMESPACE = "fleet-webhook"


@pytest.mark.parametrize("scenario", ci_scenarios())
def test_every_namespaced_object_is_in_the_release_namespace(scenario):
    values = ci_values(scenario)
    r = render(values, namespace=OTHER_NAMESPACE)
    # Objects whose namespace is a value of its own, not the release's.
    own = {
        ("Secret", "promfed-kapp-overlay"): values.get("kapp", {}).get("overlaySecret", {}).get("namespace"),
    }
    dashboards_ns = values.get("dashboards", {}).get("namespace") or OTHER_NAMESPACE
    checked = 0
    for doc in r.docs:
        kind, meta = doc["kind"], doc["metadata"]
        if kind in CLUSTER_SCOPED:
            continue
        if (kind, meta["name"]) in own:
            continue
        expected = dashboards_ns if "grafana_dashboard" in meta.get("labels", {}) else OTHER_NAMESPACE
        assert meta.get("namespace") == expected, f"{kind} {meta['name']}"
        checked += 1
    assert checked >= 4
    for hook in r.one("MutatingWebhookConfiguration")["webhooks"]:
        assert hook["clientConfig"]["service"]["namespace"] == OTHER_NAMESPACE
        excluded = [
            e["values"]
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
        ]
        assert excluded == [[OTHER_NAMESPACE]], hook["name"]


def test_only_the_helper_reads_the_release_namespace():
    for path in sorted((CHART / "templates").iterdir()):
        uses = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if ".Release.Namespace" in line]
        if path.name == "_helpers.tpl":
            assert len(uses) == 1, uses
        else:
            assert uses == [], f"{path.name}:{uses}: use include \"promfed.namespace\""


def test_values_yaml_names_its_schema_on_line_1():
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    m = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert m, first
    assert (CHART / m.group(1)).is_file()


def test_chart_yaml_has_sources_and_maintainers():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    assert chart["maintainers"] and all(m.get("name") for m in chart["maintainers"])


def test_readme_has_upgrading_and_uninstall():
    headings = re.findall(r"^## (.+)$", (CHART / "README.md").read_text(), flags=re.M)
    assert "Upgrading" in headings and "Uninstall" in headings, headings
