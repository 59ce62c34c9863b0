"""Helpers for the chart tests: render with Helm 4's SDK, parse, validate.

`helm_python.Chart.render` does not expose the Kubernetes version, but the C ABI's render
options do (`kube_version`, as `helm template --kube-version`); `render()` passes it through
the SDK's own native call so `.Capabilities.KubeVersion` is what the test asks for.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_python import _native

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "promfed"
CI_DIR = CHART / "ci"
NAMESPACE = "promfed-system"
RELEASE = "promfed"
# A current Kubernetes version for validation (the newest schemas kubernetes-validate ships).
CURRENT_KUBE = kubernetes_validate.utils.latest_version()

# Minimal schemas for the CRDs the chart may render (kubernetes-validate has built-in kinds only):
# the fields the chart sets, with their types, and no unknown fields at the spec level.
_STR = {"type": "string"}
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("cert-manager.io/v1", "Issuer"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {"selfSigned": {"type": "object"}, "ca": {"type": "object"}},
            }
        },
    },
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["secretName", "issuerRef", "dnsNames"],
                "properties": {
                    "secretName": _STR,
                    "duration": _STR,
                    "renewBefore": _STR,
                    "commonName": {"type": "string", "maxLength": 64},
                    "dnsNames": {"type": "array", "items": _STR, "minItems": 1},
                    "usages": {"type": "array", "items": _STR},
                    "privateKey": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "size": {"type": "integer"},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                        },
                    },
                    "issuerRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {"name": _STR, "kind": _STR, "group": _STR},
                    },
                },
            }
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object"},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": _STR,
                                "path": _STR,
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _STR,
                                "scrapeTimeout": _STR,
                            },
                        },
                    },
                },
            }
        },
    },
}


def ci_values(name: str) -> dict[str, Any]:
    """Values of `charts/promfed/ci/<name>-values.yaml`."""
    return yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text()) or {}


def ci_scenarios() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


class Rendered:
    """The parsed manifests of one render, with lookups by kind and name."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.docs: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("_source", path)
                    self.docs.append(doc)

    @property
    def notes(self) -> str:
        return next((t for p, t in self.files.items() if p.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def render(
    values: dict[str, Any] | None = None,
    *,
    kube_version: str = "v1.30.0",
    namespace: str = NAMESPACE,
) -> Rendered:
    """Renders the chart offline as `helm template --kube-version` would."""
    with helm.Chart.load(CHART) as chart:
        opts = {"name": RELEASE, "namespace": namespace, "kube_version": kube_version, "is_install": True}
        payload = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)
        )
    return Rendered(json.loads(payload))


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def validate(doc: dict[str, Any], version: str = CURRENT_KUBE) -> None:
    """Strict schema validation: kubernetes-validate for built-in kinds, CRD_SCHEMAS otherwise."""
    import jsonschema

    doc = strip(doc)
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        assert doc["metadata"].get("name"), "CRD object without a name"
        jsonschema.validate(doc, CRD_SCHEMAS[key])
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="session")
def promfed_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("PROMFED_BIN", ROOT / "target" / "debug" / "promfed"))
    if not path.is_absolute():
        path = ROOT / path
    if not path.exists():
        pytest.fail(f"promfed binary {path} not found: run `cargo build` or set PROMFED_BIN")
    return path
