{{/*
The kapp Config that lets kapp (and so kapp-controller's PackageInstall of the TKG Prometheus)
keep promfed's changes. kapp normally tolerates a webhook through its kapp.k14s.io/original
record; a ConfigMap whose record would exceed 262,144 characters has none, and kapp then diffs
its (unmutated) input against the live (mutated) object on every sync.

The rebase rules are ytt overlays and keep the live object's content only when it was produced
from this very input: each rule stamps kapp's input with a digest annotation
(promfed.io/kapp-input-sha256, the sha256 of the canonical JSON of the ConfigMap's data, or of
the Deployment's pod template). When the live object carries the digest of the current input,
the webhook's output is copied into the input and kapp sees no change; when the input changed
(a new TKG package version, new rules), the digests differ and kapp applies it, and the webhook
rewrites it again. A plain `copy` rule from the existing object would hide such changes for good.
ytt's json.encode sorts keys, so the digest does not depend on key order. Needs kapp >= 0.38.
*/}}
{{- define "promfed.kappConfig" -}}
{{- $match := include "promfed.match" . | fromJson -}}
apiVersion: kapp.k14s.io/v1alpha1
kind: Config
minimumRequiredVersion: 0.38.0
rebaseRules:
  # The Prometheus server ConfigMap: keep promfed's prometheus.yml and rule files.
  - resourceMatchers:
      - kindNamespaceNameMatcher:
          kind: ConfigMap
          namespace: {{ .Values.kapp.prometheusNamespace }}
          name: {{ $match.configMap.name }}
    ytt:
      overlayContractV1:
        overlay.yml: |
          #@ load("@ytt:data", "data")
          #@ load("@ytt:json", "json")
          #@ load("@ytt:overlay", "overlay")
          #@ load("@ytt:sha256", "sha256")
          #@ load("@ytt:struct", "struct")
          #@ new = struct.decode(data.values.new)
          #@ existing = struct.decode(data.values.existing)
          #@ want = sha256.sum(json.encode(new.get("data") or {}))
          #@ have = (existing.get("metadata") or {}).get("annotations") or {}
          #@ keep = have.get("promfed.io/kapp-input-sha256") == want and existing.get("data") != None
          #@overlay/match by=overlay.all
          ---
          #@ if/end keep:
          #@overlay/replace or_add=True
          data: #@ existing.get("data")
          #@overlay/match missing_ok=True
          metadata:
            #@overlay/match missing_ok=True
            annotations:
              #@overlay/match missing_ok=True
              promfed.io/kapp-input-sha256: #@ want
  # The Prometheus server Deployment: keep the federation Secret volumes and volumeMounts.
  - resourceMatchers:
      - kindNamespaceNameMatcher:
          kind: Deployment
          namespace: {{ .Values.kapp.prometheusNamespace }}
          name: {{ $match.deployment.name }}
    ytt:
      overlayContractV1:
        overlay.yml: |
          #@ load("@ytt:data", "data")
          #@ load("@ytt:json", "json")
          #@ load("@ytt:overlay", "overlay")
          #@ load("@ytt:sha256", "sha256")
          #@ load("@ytt:struct", "struct")
          #@ new = struct.decode(data.values.new)
          #@ existing = struct.decode(data.values.existing)
          #@ def pod(res):
          #@   return ((res.get("spec") or {}).get("template") or {}).get("spec") or {}
          #@ end
          #@ want = sha256.sum(json.encode((new.get("spec") or {}).get("template") or {}))
          #@ have = (existing.get("metadata") or {}).get("annotations") or {}
          #@ keep = have.get("promfed.io/kapp-input-sha256") == want
          #@ def containers():
          #@   mounts = {}
          #@   for c in pod(existing).get("containers") or []:
          #@     mounts[c.get("name")] = c.get("volumeMounts")
          #@   end
          #@   out = []
          #@   for c in pod(new).get("containers") or []:
          #@     c = dict(c)
          #@     if mounts.get(c.get("name")):
          #@       c["volumeMounts"] = mounts[c.get("name")]
          #@     end
          #@     out.append(c)
          #@   end
          #@   return out
          #@ end
          #@overlay/match by=overlay.all
          ---
          #@ if/end keep:
          spec:
            template:
              spec:
                #@ if/end pod(existing).get("volumes"):
                #@overlay/replace or_add=True
                volumes: #@ pod(existing).get("volumes")
                #@overlay/replace
                containers: #@ containers()
          #@overlay/match missing_ok=True
          metadata:
            #@overlay/match missing_ok=True
            annotations:
              #@overlay/match missing_ok=True
              promfed.io/kapp-input-sha256: #@ want
{{- end }}
