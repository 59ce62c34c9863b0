"""Values the chart must refuse at `helm template` time, with the message `promfed check` gives.

promfed refuses these values files at start; a chart that renders them installs a webhook that
never becomes ready. Each case renders the chart (as `config:` and as `configFile`) and runs
`promfed check -` on the same values: the chart's error must carry promfed's message.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import CHART, render

FED = {"job_name": "fed", "metrics_path": "/federate"}

BAD = {
    "no-cluster-label": {
        "additionalScrapeConfigs": [
            {**FED, "static_configs": [{"targets": ["a:9090", "b:9090"], "labels": {"env": "x"}}]}
        ]
    },
    "local-cluster-label": {
        "localClusterName": "tools",
        "additionalScrapeConfigs": [
            {**FED, "static_configs": [{"targets": ["a:9090"], "labels": {"cluster": "tools"}}]}
        ],
    },
    "sd-configs-only": {
        "additionalScrapeConfigs": [{**FED, "kubernetes_sd_configs": [{"role": "pod"}]}]
    },
    "no-static-configs": {"additionalScrapeConfigs": [dict(FED)]},
    "duplicate-job": {
        "additionalScrapeConfigs": [
            {**FED, "static_configs": [{"targets": ["a"], "labels": {"cluster": "a"}}]},
            {**FED, "static_configs": [{"targets": ["b"], "labels": {"cluster": "b"}}]},
        ]
    },
    "cluster-label-job": {"clusterLabelName": "job"},
    "cluster-label-instance": {"clusterLabelName": "instance"},
    "empty-local-name": {"localClusterName": ""},
    "reserved-label": {"clusterLabelName": "__cluster"},
    "other-label-name": {
        "clusterLabelName": "origin",
        "additionalScrapeConfigs": [
            {**FED, "static_configs": [{"targets": ["a"], "labels": {"cluster": "a"}}]}
        ],
    },
}


def promfed_says(promfed_bin, config: dict) -> str:
    """promfed's own message for this values file (what `promfed serve` would die with)."""
    out = subprocess.run(
        [str(promfed_bin), "check", "-"],
        input=yaml.safe_dump(config),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out
    prefix = "error: values file <stdin>: "
    (line,) = [l for l in out.stderr.splitlines() if l.startswith(prefix)]
    return line.removeprefix(prefix)


def render_error(values: dict) -> str:
    with pytest.raises(Exception) as err:
        render(values)
    return str(err.value)


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("as_file", [False, True], ids=["config", "configFile"])
def test_chart_refuses_what_promfed_refuses(case, as_file, promfed_bin):
    config = BAD[case]
    message = promfed_says(promfed_bin, config)
    values = {"configFile": "#@data/values\n---\n" + yaml.safe_dump(config)} if as_file else {"config": config}
    error = render_error(values)
    if not as_file and "meet the specifications of the schema" in error:
        # values.schema.json got there first (it sees `config:`, not configFile): it must name the key.
        assert "at '/config/" in error, error
        return
    assert f"values: {message}" in error, f"promfed: {message}\nchart: {error}"


def test_good_values_render_and_pass_promfed_check(promfed_bin):
    config = {
        "localClusterName": "tools",
        "additionalScrapeConfigs": [
            {**FED, "static_configs": [{"targets": ["a:9090"], "labels": {"cluster": "a"}}]}
        ],
    }
    r = render({"config": config})
    text = r.one("ConfigMap", "promfed")["data"]["values.yaml"]
    out = subprocess.run([str(promfed_bin), "check", "-"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_config_and_config_file_together_fail():
    error = render_error({"configFile": "localClusterName: a\n", "config": {"localClusterName": "b"}})
    assert "config and configFile are both set" in error, error


def test_config_file_with_the_chart_default_config_renders():
    # The template's idea of the default `config` matches values.yaml: passing that default
    # explicitly next to configFile is not "both set" (nothing would be dropped).
    default_config = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    r = render({"configFile": "localClusterName: a\n", "config": default_config})
    assert r.one("ConfigMap", "promfed")["data"]["values.yaml"].startswith("localClusterName: a")


def test_config_file_typo_fails_like_promfed(promfed_bin):
    config = {"localClustername": "tools"}
    assert promfed_says(promfed_bin, config).startswith('unknown key "localClustername"')
    error = render_error({"configFile": yaml.safe_dump(config)})
    assert 'values: unknown key "localClustername"' in error, error


def test_broken_config_file_fails_naming_config_file():
    error = render_error({"configFile": "localClusterName: [\n"})
    assert "configFile: not valid YAML" in error, error
