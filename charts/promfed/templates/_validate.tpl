{{/*
Refuses, at `helm template`/`install` time, the values file promfed would refuse at start, with
promfed's own message (`promfed check` prints the same text; tests/chart compares them). The
checks mirror Values::validate in src/config.rs for what a chart user can get wrong by hand.
*/}}

{{/* The chart's default `config` (values.yaml); tests/chart checks the two agree. */}}
{{- define "promfed.defaultConfig" -}}
{{- $match := dict "configMap" (dict "name" "prometheus-server" "labels" (dict "app" "prometheus" "component" "server")) "deployment" (dict "name" "prometheus-server" "labels" (dict "app" "prometheus" "component" "server") "container" "prometheus-server") }}
{{- toJson (dict "localClusterName" "local" "clusterLabelName" "cluster" "additionalScrapeConfigs" (list) "ruleFiles" (list "recording_rules.yml") "onError" "deny" "match" $match "federationSecrets" (list)) }}
{{- end }}

{{- define "promfed.validate" -}}
{{- $c := .Values.config }}
{{- if .Values.configFile }}
{{- if and .Values.config (ne (toJson .Values.config) (include "promfed.defaultConfig" .)) }}
{{- fail "config and configFile are both set: configFile replaces config entirely, so the config values would be silently dropped; set only one of them" }}
{{- end }}
{{- $c = fromYaml .Values.configFile }}
{{- if hasKey $c "Error" }}
{{- fail (printf "configFile: not valid YAML (or not a mapping of keys at the top level): %s" (get $c "Error")) }}
{{- end }}
{{- end }}
{{- include "promfed.validateValues" (default dict $c) }}
{{- end }}

{{/* One values mapping; `null` means the default, as in promfed. */}}
{{- define "promfed.validateValues" -}}
{{- $c := . }}
{{- $known := list "localClusterName" "clusterLabelName" "additionalScrapeConfigs" "ruleFiles" "onError" "match" "federationSecrets" }}
{{- range $k, $_ := $c }}
{{- if not (has $k $known) }}
{{- fail (printf "values: unknown key %q (known keys here are %s); `promfed check` suggests the closest" $k (join ", " $known)) }}
{{- end }}
{{- end }}
{{- $label := "cluster" }}
{{- $v := index $c "clusterLabelName" }}
{{- if not (kindIs "invalid" $v) }}
{{- if not (kindIs "string" $v) }}{{ fail (printf "values: clusterLabelName: expected a string, found %v" $v) }}{{ end }}
{{- $label = $v }}
{{- end }}
{{- $local := "local" }}
{{- $v = index $c "localClusterName" }}
{{- if not (kindIs "invalid" $v) }}
{{- if not (kindIs "string" $v) }}{{ fail (printf "values: localClusterName: expected a string, found %v" $v) }}{{ end }}
{{- $local = $v }}
{{- end }}
{{- if not (regexMatch "^[a-zA-Z_][a-zA-Z0-9_]*$" $label) }}
{{- fail (printf "values: clusterLabelName %q is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)" $label) }}
{{- end }}
{{- if hasPrefix "__" $label }}
{{- fail (printf "values: clusterLabelName %q starts with \"__\", which Prometheus reserves for internal labels that are dropped after relabelling" $label) }}
{{- end }}
{{- $reserved := dict "job" "every target's job name" "instance" "every target's address" "le" "histogram bucket bounds" "quantile" "summary quantiles" }}
{{- if hasKey $reserved $label }}
{{- fail (printf "values: clusterLabelName %q is a label Prometheus already uses (%s); the local relabel rule would overwrite it on every local target. Pick another name, e.g. \"cluster\"" $label (get $reserved $label)) }}
{{- end }}
{{- if eq $local "" }}
{{- fail "values: localClusterName must not be empty" }}
{{- end }}
{{- $jobs := dict }}
{{- range $i, $sc := (index $c "additionalScrapeConfigs" | default list) }}
{{- if not (kindIs "map" $sc) }}
{{- fail (printf "values: additionalScrapeConfigs[%d]: expected a scrape config mapping" $i) }}
{{- end }}
{{- if not (hasKey $sc "job_name") }}
{{- fail (printf "values: additionalScrapeConfigs[%d] has no job_name" $i) }}
{{- end }}
{{- $job := index $sc "job_name" }}
{{- if or (not (kindIs "string" $job)) (eq (toString $job) "") }}
{{- fail (printf "values: additionalScrapeConfigs[%d]: job_name must be a non-empty string" $i) }}
{{- end }}
{{- if hasKey $jobs $job }}
{{- fail (printf "values: additionalScrapeConfigs[%d]: job_name %q is used twice; job names must be unique" $i $job) }}
{{- end }}
{{- $_ := set $jobs $job true }}
{{- $at := printf "additionalScrapeConfigs[%d] (job %q)" $i $job }}
{{- range $k, $val := $sc }}
{{- if and (hasSuffix "_sd_configs" $k) (not (kindIs "invalid" $val)) }}
{{- fail (printf "values: %s: %s is not supported in a federation job: its targets would carry no %q label. List the federated Prometheus servers in static_configs, each with labels: {%s: <cluster name>}" $at $k $label $label) }}
{{- end }}
{{- end }}
{{- $statics := index $sc "static_configs" }}
{{- if kindIs "invalid" $statics }}
{{- fail (printf "values: %s: has no static_configs; every federation target must be listed there with labels: {%s: <cluster name>}" $at $label) }}
{{- end }}
{{- if not (kindIs "slice" $statics) }}
{{- fail (printf "values: %s: static_configs must be a list" $at) }}
{{- end }}
{{- range $j, $st := $statics }}
{{- $targets := list }}
{{- range (index $st "targets" | default list) }}{{ $targets = append $targets (toString .) }}{{ end }}
{{- $value := index (index $st "labels" | default dict) $label }}
{{- if and (kindIs "string" $value) (eq $value $local) }}
{{- fail (printf "values: scrape config %q for targets [%s] (static_configs[%d]) labels its targets %s=%q, which is localClusterName: federated series would mix with local ones" $job (join ", " $targets) $j $label $value) }}
{{- end }}
{{- if or (not (kindIs "string" $value)) (eq (toString $value) "") }}
{{- fail (printf "values: scrape config %q for targets [%s] (static_configs[%d]) does not have a non-empty label %q" $job (join ", " $targets) $j $label) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
