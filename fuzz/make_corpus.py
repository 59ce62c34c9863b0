#!/usr/bin/env python3
"""Builds the committed seed corpora (fuzz/corpus/<target>/) from the project's fixtures.

Run from anywhere: python3 fuzz/make_corpus.py (needs PyYAML). Seeds are named by their
source so a rerun replaces them instead of piling up copies.
"""
import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
TARGETS = ["promql_rewrite", "rule_file", "prometheus_yml", "configmap", "admission"]

# promql_rewrite's first byte selects the options (see fuzz_targets/promql_rewrite.rs):
# 0x20 = rule files (tag label-less vectors), 0x11 = dashboards (regex, value "$cluster").
PROMQL_FLAGS = {"rules": 0x20, "dash": 0x11}


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).write_bytes(data)


def rule_exprs(text):
    doc = yaml.safe_load(text) or {}
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            if "expr" in r:
                yield str(r["expr"])


def main():
    for t in TARGETS:
        for f in (CORPUS / t).glob("*") if (CORPUS / t).exists() else []:
            f.unlink()
    exprs = []
    configmaps = {
        "example": ROOT / "examples" / "tkg-prometheus-configmap.yaml",
        "golden": ROOT / "tests" / "fixtures" / "golden" / "tkg-mutated.yaml",
    }
    for label, path in configmaps.items():
        cm = yaml.safe_load(path.read_text())
        data = cm["data"]
        put("prometheus_yml", f"{label}-prometheus.yml", data["prometheus.yml"])
        for key, text in data.items():
            if key != "prometheus.yml":
                put("rule_file", f"{label}-{key}", text)
                exprs.extend(rule_exprs(text))
        put(
            "configmap",
            f"{label}-split",
            "\0".join(
                data.get(k, "")
                for k in ["prometheus.yml", "recording_rules.yml", "alerting_rules.yml"]
            ),
        )
        put("configmap", f"{label}.json", json.dumps(cm, indent=1))
    fleet = ROOT / "tests" / "fixtures" / "fleet"
    for name in ["tools-prometheus.yml", "workload-prometheus.yml"]:
        put("prometheus_yml", f"fleet-{name}", (fleet / name).read_text())
    for path in [fleet / "recording_rules.yml", ROOT / "tests/fixtures/differential/rules.yml"]:
        text = path.read_text()
        put("rule_file", f"{path.parent.name}-{path.name}", text)
        exprs.extend(rule_exprs(text))
    for line in (ROOT / "tests/fixtures/promql/tricky.promql").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            exprs.append(line)
    for i, e in enumerate(dict.fromkeys(exprs)):
        for mode, flag in PROMQL_FLAGS.items():
            put("promql_rewrite", f"{i:03}-{mode}", bytes([flag]) + e.encode())
    for path in sorted((ROOT / "tests/fixtures/admission").glob("*.json")):
        put("admission", path.name, path.read_bytes())
    # A review of the example ConfigMap: what the webhook sees for a fresh TKG install.
    cm = yaml.safe_load(configmaps["example"].read_text())
    review = json.loads((ROOT / "tests/fixtures/admission/configmap-create.json").read_text())
    review["request"]["object"] = cm
    put("admission", "example-create.json", json.dumps(review))
    for t in TARGETS:
        print(t, len(list((CORPUS / t).iterdir())))


if __name__ == "__main__":
    main()
