"""The Helm chart, rendered by Helm 4's SDK and checked field by field.

Each test renders the real chart (no string matching on templates) and validates what Kubernetes
would receive; `promfed check` judges the values file the chart writes.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

import helm_python as helm
import pytest
import yaml

from conftest import (
    CHART,
    CURRENT_KUBE,
    NAMESPACE,
    ci_scenarios,
    ci_values,
    render,
    validate,
)

SCENARIOS = ci_scenarios()
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def webhooks(r):
    return {w["name"]: w for w in r.one("MutatingWebhookConfiguration")["webhooks"]}


def container(r):
    (c,) = r.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def rendered_values_file(r) -> str:
    return r.one("ConfigMap", "promfed")["data"]["values.yaml"]


# --- lint and schema validation of every scenario ------------------------------------------


def test_there_are_ci_scenarios():
    assert {"default", "seed", "certmanager", "secret", "dashboards", "kapp"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario):
    report = helm.lint(CHART, ci_values(scenario), strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("kube_version", ["v1.27.0", "v1.30.0", f"v{CURRENT_KUBE}"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_validates(scenario, kube_version):
    r = render(ci_values(scenario), kube_version=kube_version)
    assert r.docs, "nothing rendered"
    for doc in r.docs:
        # Validate for the cluster version rendered for, and for a current one.
        validate(doc, kube_version.lstrip("v"))
        validate(doc)
    kinds = {d["kind"] for d in r.docs}
    assert not kinds & RBAC_KINDS, "promfed needs no Kubernetes API access: no RBAC objects"
    assert {"Deployment", "Service", "ConfigMap", "MutatingWebhookConfiguration"} <= kinds


# --- Deployment -------------------------------------------------------------------------


def test_deployment_is_restricted_and_probed():
    r = render()
    dep = r.one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(r)
    assert dep["spec"]["replicas"] == 2
    assert pod["automountServiceAccountToken"] is False
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["args"] == ["serve"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PROMFED_VALUES"] == "/etc/promfed/config/values.yaml"
    assert env["PROMFED_TLS_CERT"] == "/etc/promfed/tls/tls.crt"
    assert env["PROMFED_TLS_KEY"] == "/etc/promfed/tls/tls.key"
    assert env["PROMFED_LISTEN"] == "0.0.0.0:8443"
    assert env["PROMFED_METRICS_LISTEN"] == "0.0.0.0:8080"
    assert env["PROMFED_REWRITE_MEMO_MIB"] == "16"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"https": 8443, "metrics": 8080}
    # Directory mounts only: promfed reloads when the kubelet swaps the ..data symlink.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert all("subPath" not in m and m["readOnly"] for m in mounts.values())
    assert mounts["config"]["mountPath"] == "/etc/promfed/config"
    assert mounts["tls"]["mountPath"] == "/etc/promfed/tls"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "promfed"
    assert volumes["tls"]["secret"]["secretName"] == "promfed-tls"
    # No restart-on-change checksum: promfed reloads the values file itself.
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("checksum/") for k in ann)
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "8080"
    assert ann["prometheus.io/path"] == "/metrics"
    # Spread across nodes, selectors consistent.
    sel = dep["spec"]["selector"]["matchLabels"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == sel
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == sel
    assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert r.one("Service")["spec"]["selector"] == sel
    assert r.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == sel
    svc_ports = {p["name"]: p for p in r.one("Service")["spec"]["ports"]}
    assert svc_ports["https"]["port"] == 443 and svc_ports["https"]["targetPort"] == "https"


def test_spread_and_pdb_can_be_turned_off():
    r = render(ci_values("configmaps-only"))
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod and "affinity" not in pod
    assert r.of_kind("PodDisruptionBudget") == []


def test_metrics_pod_annotations_can_be_turned_off():
    r = render({"metrics": {"podAnnotations": False}})
    assert "annotations" not in r.one("Deployment")["spec"]["template"]["metadata"]


# --- MutatingWebhookConfiguration ------------------------------------------------------


def test_webhook_configuration_essentials():
    r = render()
    hooks = webhooks(r)
    assert set(hooks) == {"configmaps.promfed.io", "deployments.promfed.io"}
    expected_rules = {
        "configmaps.promfed.io": {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]},
        "deployments.promfed.io": {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]},
    }
    for name, w in hooks.items():
        (rule,) = w["rules"]
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert {k: rule[k] for k in ("apiGroups", "apiVersions", "resources")} == expected_rules[name]
        assert w["sideEffects"] == "None"
        assert w["admissionReviewVersions"] == ["v1"]
        assert w["timeoutSeconds"] == 5
        assert w["failurePolicy"] == "Fail"
        assert w["reinvocationPolicy"] == "Never"
        assert w["clientConfig"]["service"] == {
            "name": "promfed",
            "namespace": NAMESPACE,
            "path": "/mutate",
            "port": 443,
        }
        assert w["objectSelector"] == {"matchLabels": {"app": "prometheus", "component": "server"}}
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": [NAMESPACE],
        } in w["namespaceSelector"]["matchExpressions"]


def test_failure_policy_is_configurable_and_documented():
    assert webhooks(render(ci_values("secret")))["configmaps.promfed.io"]["failurePolicy"] == "Ignore"
    text = (CHART / "values.yaml").read_text()
    block = text[text.index("webhook:") : text.index("failurePolicy: Fail")]
    assert "silently mixes" in block, "values.yaml must say why Fail is the default"


def test_namespace_exclusion_follows_the_release_namespace():
    r = render(namespace="monitoring-tools")
    for w in webhooks(r).values():
        assert w["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring-tools"]


@pytest.mark.parametrize(
    ("kube_version", "expected"),
    [("v1.27.9", False), ("v1.28.0", True), ("v1.30.2", True), (f"v{CURRENT_KUBE}", True)],
)
def test_match_conditions_only_where_supported(kube_version, expected):
    hooks = webhooks(render(kube_version=kube_version))
    for w in hooks.values():
        assert ("matchConditions" in w) is expected, (kube_version, w)
    if expected:
        (cond,) = hooks["configmaps.promfed.io"]["matchConditions"]
        assert cond["expression"] == 'object.metadata.name == "prometheus-server"'


def test_match_conditions_can_be_disabled():
    for w in webhooks(render({"webhook": {"matchConditions": False}})).values():
        assert "matchConditions" not in w


def test_custom_match_drives_selectors_and_conditions():
    r = render(ci_values("configmaps-only"))
    hooks = webhooks(r)
    assert set(hooks) == {"configmaps.promfed.io"}
    w = hooks["configmaps.promfed.io"]
    assert w["objectSelector"] == {
        "matchLabels": {"app": "prometheus", "app.kubernetes.io/name": "prometheus", "component": "server"}
    }
    assert w["matchConditions"][0]["expression"] == 'object.metadata.name == "prom-config"'
    assert {"key": "promfed.io/ignore", "operator": "DoesNotExist"} in w["namespaceSelector"]["matchExpressions"]


def test_explicit_object_selector_wins():
    sel = {"matchExpressions": [{"key": "promfed.io/mutate", "operator": "In", "values": ["yes"]}]}
    w = webhooks(render({"webhook": {"deployments": {"objectSelector": sel}}}))["deployments.promfed.io"]
    assert w["objectSelector"] == sel


def test_no_webhook_at_all_is_refused():
    with pytest.raises(helm.HelmError, match="enable webhook.configMaps or webhook.deployments"):
        render({"webhook": {"configMaps": {"enabled": False}, "deployments": {"enabled": False}}})


# --- TLS modes ------------------------------------------------------------------------------


def test_tls_helm_mode_generates_ca_and_serving_cert():
    r = render()
    secret = r.one("Secret", "promfed-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = base64.b64decode(secret["data"]["ca.crt"]).decode()
    crt = base64.b64decode(secret["data"]["tls.crt"]).decode()
    key = base64.b64decode(secret["data"]["tls.key"]).decode()
    assert ca.startswith("-----BEGIN CERTIFICATE-----") and crt.startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in key and ca != crt
    for w in webhooks(r).values():
        assert w["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert "cert-manager.io/inject-ca-from" not in r.one("MutatingWebhookConfiguration")["metadata"].get(
        "annotations", {}
    )
    assert r.of_kind("Certificate") == [] and r.of_kind("Issuer") == []


def test_tls_cert_manager_mode():
    r = render(ci_values("certmanager"))
    cert = r.one("Certificate", "promfed")
    issuer = r.one("Issuer", "promfed-selfsigned")
    assert "selfSigned" in issuer["spec"]
    assert cert["spec"]["secretName"] == "promfed-tls"
    assert cert["spec"]["issuerRef"]["name"] == "promfed-selfsigned"
    assert f"promfed.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    mwc = r.one("MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/promfed"
    for w in mwc["webhooks"]:
        assert "caBundle" not in w["clientConfig"], "cert-manager injects the caBundle"
    assert r.of_kind("Secret") == []


def test_tls_cert_manager_with_existing_issuer():
    r = render(ci_values("certmanager-issuer"))
    assert r.of_kind("Issuer") == []
    assert r.one("Certificate")["spec"]["issuerRef"] == {
        "name": "internal-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_tls_existing_secret_mode():
    values = ci_values("secret")
    r = render(values)
    assert r.of_kind("Secret") == []
    for w in webhooks(r).values():
        assert w["clientConfig"]["caBundle"] == values["tls"]["secret"]["caBundle"]
    vols = {v["name"]: v for v in r.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "promfed-serving-cert"


# --- the values file and promfed check --------------------------------------------------------


def test_seed_values_pasted_under_config_render_unchanged():
    values = ci_values("seed")
    assert yaml.safe_load(rendered_values_file(render(values)))["additionalScrapeConfigs"] == values["config"][
        "additionalScrapeConfigs"
    ]


def test_config_file_is_used_verbatim():
    values = ci_values("configfile")
    assert rendered_values_file(render(values)).rstrip("\n") == values["configFile"].rstrip("\n")


@pytest.mark.parametrize("scenario", ["default", "seed", "configfile", "configmaps-only", "kapp"])
def test_rendered_values_file_passes_promfed_check(scenario, promfed_bin, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(rendered_values_file(render(ci_values(scenario))))
    run = subprocess.run([promfed_bin, "check", "--values", path], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr + run.stdout


def test_config_file_is_checked_at_render_time_as_promfed_checks_it(promfed_bin, tmp_path):
    # configFile is free text the schema cannot see; the chart's templates check it as promfed
    # does (tests/chart/test_validation.py has every case), and promfed check agrees.
    bad = "additionalScrapeConfigs:\n- job_name: fed\n  static_configs:\n  - targets: [a:9090]\n    labels: {env: x}\n"
    with pytest.raises(helm.errors.HelmRenderError, match='does not have a non-empty label "cluster"'):
        render({"configFile": bad})
    path = tmp_path / "values.yaml"
    path.write_text(bad)
    run = subprocess.run([promfed_bin, "check", path], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert 'does not have a non-empty label "cluster"' in run.stderr


# --- bad values fail with the schema's message -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"mode": "selfsigned"}}, "at '/tls/mode': value must be one of 'certManager', 'helm', 'secret'"),
        ({"tls": {"mode": "secret"}}, "at '/tls/secret/name'"),
        ({"tls": {"mode": "secret", "secret": {"name": "x"}}}, "at '/tls/secret/caBundle'"),
        ({"config": {"onError": "maybe"}}, "at '/config/onError': value must be one of 'deny', 'allow'"),
        ({"config": {"clusterLabelName": "__cluster"}}, "at '/config/clusterLabelName'"),
        ({"config": {"clusterLabelName": "my-cluster"}}, "at '/config/clusterLabelName'"),
        ({"config": {"localClustername": "tools"}}, "additional properties 'localClustername' not allowed"),
        ({"config": {"additionalScrapeConfigs": [{"static_configs": []}]}}, "missing property 'job_name'"),
        (
            {"config": {"federationSecrets": [{"secretName": "Fed_Certs", "mountPath": "/x"}]}},
            "at '/config/federationSecrets/0/secretName'",
        ),
        ({"config": {"federationSecrets": [{"secretName": "a", "mountPath": "rel"}]}}, "mountPath"),
        ({"webhook": {"failurePolicy": "Maybe"}}, "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'"),
        ({"webhook": {"timeoutSeconds": 31}}, "at '/webhook/timeoutSeconds'"),
        ({"replicaCount": 0}, "at '/replicaCount': minimum: got 0, want 1"),
        ({"logFormat": "xml"}, "at '/logFormat'"),
        ({"rewriteMemoMiB": -1}, "at '/rewriteMemoMiB'"),
        ({"rewriteMemoMiB": 1024}, "at '/rewriteMemoMiB'"),
        ({"dashboards": {"enable": True}}, "additional properties 'enable' not allowed"),
    ],
)
def test_bad_values_fail_with_the_schema_message(values, message):
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert "values don't meet the specifications of the schema" in str(err.value)
    assert message in str(err.value), str(err.value)


# --- optional pieces ----------------------------------------------------------------------------


def test_service_monitor():
    assert render().of_kind("ServiceMonitor") == []
    r = render(ci_values("certmanager"))
    sm = r.one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]


def test_dashboards_become_sidecar_configmaps():
    files = sorted((CHART / "dashboards").glob("*.json"))
    off = render()
    assert [c for c in off.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]] == []
    r = render(ci_values("dashboards"))
    boards = [c for c in r.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(boards) == len(files)
    by_key = {k: v for c in boards for k, v in c["data"].items()}
    assert sorted(by_key) == [f.name for f in files]
    for f in files:
        assert json.loads(by_key[f.name]) == json.loads(f.read_text())
    for c in boards:
        assert c["metadata"]["namespace"] == "tanzu-system-dashboards"
        assert c["metadata"]["annotations"] == {"grafana_folder": "promfed"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", c["metadata"]["name"])


def _kapp_config(text: str) -> dict:
    config = yaml.safe_load(text)
    assert config["apiVersion"] == "kapp.k14s.io/v1alpha1" and config["kind"] == "Config"
    return config


def test_kapp_config_rebase_rules():
    off = render()
    assert [d["metadata"]["name"] for d in off.of_kind("Secret")] == ["promfed-tls"]
    assert not any("kapp.k14s.io/config" in c["metadata"]["labels"] for c in off.of_kind("ConfigMap"))
    r = render(ci_values("kapp"))
    cm = r.one("ConfigMap", "promfed-kapp-config")
    assert cm["metadata"]["labels"]["kapp.k14s.io/config"] == ""
    config = _kapp_config(cm["data"]["config.yml"])
    rules = config["rebaseRules"]
    targets = {
        m["kindNamespaceNameMatcher"]["kind"]: m["kindNamespaceNameMatcher"]
        for rule in rules
        for m in rule["resourceMatchers"]
    }
    assert targets == {
        "ConfigMap": {"kind": "ConfigMap", "namespace": "tanzu-system-monitoring", "name": "prometheus-server"},
        "Deployment": {"kind": "Deployment", "namespace": "tanzu-system-monitoring", "name": "prometheus-server"},
    }
    for rule in rules:
        overlay = rule["ytt"]["overlayContractV1"]["overlay.yml"]
        # A ytt overlay is YAML with #@ comments: it must parse, and it must guard the copy
        # with the input digest so kapp's changed input is never masked by the live object.
        assert yaml.safe_load(overlay) is not None
        assert "promfed.io/kapp-input-sha256" in overlay
        assert "#@ if/end keep:" in overlay
        assert "sha256.sum(json.encode(" in overlay
    cm_overlay = rules[0]["ytt"]["overlayContractV1"]["overlay.yml"]
    assert "data: #@ existing.get(\"data\")" in cm_overlay
    dep_overlay = rules[1]["ytt"]["overlayContractV1"]["overlay.yml"]
    assert "volumes:" in dep_overlay and "volumeMounts" in dep_overlay

    secret = r.one("Secret", "promfed-kapp-overlay")
    assert secret["metadata"]["namespace"] == "tanzu-package-repo-global"
    assert _kapp_config(secret["stringData"]["promfed-kapp-config.yml"]) == config
    assert "ytt-paths-from-secret-name.0=promfed-kapp-overlay" in r.notes


def test_kapp_config_follows_custom_match():
    values = ci_values("kapp")
    values["config"] = {"match": {"configMap": {"name": "prom-config"}}}
    values["kapp"]["prometheusNamespace"] = "monitoring"
    config = _kapp_config(render(values).one("ConfigMap", "promfed-kapp-config")["data"]["config.yml"])
    matcher = config["rebaseRules"][0]["resourceMatchers"][0]["kindNamespaceNameMatcher"]
    assert matcher == {"kind": "ConfigMap", "namespace": "monitoring", "name": "prom-config"}


# --- documentation of the values ------------------------------------------------------------------

# Objects passed to Kubernetes as they are; their fields are Kubernetes', documented upstream.
PASSTHROUGH = {"podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe"}


def _value_lines():
    """(line index, dotted path) of every key in values.yaml outside pass-through objects."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not m or line.lstrip().startswith("#") or line.lstrip().startswith("-"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        path = [k for _, k in stack]
        if path[0] in PASSTHROUGH and len(path) > 1:
            continue
        if path[0] == "config" and "additionalScrapeConfigs" in path[1:-1]:
            continue
        if path[:3] == ["config", "match", "configMap"] and len(path) > 4:
            continue
        if path[:3] == ["config", "match", "deployment"] and len(path) > 4:
            continue
        yield lines, i, ".".join(path)


def test_every_value_has_a_double_hash_comment():
    missing = [p for lines, i, p in _value_lines() if not lines[i - 1].lstrip().startswith("##")]
    assert missing == []


def test_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    missing = [p for _, _, p in _value_lines() if f"`{p}`" not in readme]
    assert missing == []


def test_schema_describes_every_property():
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented = []

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            if "type" in sub and "description" not in sub:
                undocumented.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    assert undocumented == []
    # Every top-level value has a schema entry.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
