{{/* The namespace of every namespaced object: the one place that decides it. */}}
{{- define "promfed.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "promfed.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "promfed.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label: name-version. */}}
{{- define "promfed.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "promfed.labels" -}}
helm.sh/chart: {{ include "promfed.chart" . }}
{{ include "promfed.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: promfed
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "promfed.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promfed.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "promfed.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "promfed.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the serving certificate. */}}
{{- define "promfed.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- .Values.tls.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "promfed.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS name the API server uses to reach the Service. */}}
{{- define "promfed.serviceHost" -}}
{{- printf "%s.%s.svc" (include "promfed.fullname" .) (include "promfed.namespace" .) }}
{{- end }}

{{/* Image reference. */}}
{{- define "promfed.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The match section in force: from config, or the TKG defaults when configFile is used. */}}
{{- define "promfed.match" -}}
{{- $default := dict "configMap" (dict "name" "prometheus-server" "labels" (dict "app" "prometheus" "component" "server")) "deployment" (dict "name" "prometheus-server" "labels" (dict "app" "prometheus" "component" "server") "container" "prometheus-server") }}
{{- if .Values.configFile }}
{{- toJson $default }}
{{- else }}
{{- toJson (mergeOverwrite $default (deepCopy (default dict .Values.config.match))) }}
{{- end }}
{{- end }}

{{/* The values file text promfed reads. */}}
{{- define "promfed.valuesFile" -}}
{{- if .Values.configFile }}
{{- .Values.configFile }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}
