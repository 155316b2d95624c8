{{/* Names and labels. */}}
{{- define "graphbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graphbridge.fullname" -}}
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

{{- define "graphbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graphbridge.labels" -}}
helm.sh/chart: {{ include "graphbridge.chart" . }}
{{ include "graphbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* serve pods; the subscriptions controller has its own component label. */}}
{{- define "graphbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "graphbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: serve
{{- end }}

{{- define "graphbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "graphbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "graphbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The image with the simulator (helm test): the production image leaves it out. */}}
{{- define "graphbridge.toolsImage" -}}
{{- $sim := .Values.tests.simulate.image -}}
{{- printf "%s:%s" ($sim.repository | default (printf "%s-tools" .Values.image.repository)) ($sim.tag | default .Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* True ("true") when the spool is on: serve then runs as a StatefulSet with one PVC per pod. */}}
{{- define "graphbridge.spool" -}}
{{- if and .Values.config.spool .Values.config.spool.enabled }}true{{- end }}
{{- end }}

{{/* Port numbers taken from the config's listen addresses, so probes and Services follow them. */}}
{{- define "graphbridge.httpPort" -}}
{{- $l := dig "server" "listen" "0.0.0.0:8080" .Values.config }}
{{- last (splitList ":" $l) }}
{{- end }}
{{- define "graphbridge.adminPort" -}}
{{- $l := dig "server" "admin_listen" "0.0.0.0:9090" .Values.config }}
{{- last (splitList ":" $l) }}
{{- end }}

{{/*
The configuration as rendered: values.config plus what the chart's test mode adds. Helm reads
every YAML number as float64, so the TOML writer below prints whole numbers as integers.
*/}}
{{- define "graphbridge.effectiveConfig" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.tests.simulate.enabled }}
{{- $graph := get $cfg "graph" | default dict }}
{{- $ids := get $graph "app_ids" | default list }}
{{- $_ := set $graph "app_ids" (append $ids "5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d" | uniq) }}
{{- $vt := get $graph "validation_tokens" | default dict }}
{{- $_ := set $vt "openid_config_url" (printf "http://%s-test-issuer:8443/.well-known/openid-configuration" (include "graphbridge.fullname" .)) }}
{{- $_ := set $vt "min_refresh_interval_s" 1 }}
{{- $_ := set $graph "validation_tokens" $vt }}
{{- $_ := set $cfg "graph" $graph }}
{{- end }}
{{- if and (eq .Values.source "eventhubs") .Values.eventhubs.connectionString.existingSecret }}
{{- $eh := get $cfg "eventhubs" | default dict }}
{{- $_ := set $eh "connection_string_file" "/etc/graphbridge/eventhubs/connection-string" }}
{{- $_ := set $cfg "eventhubs" $eh }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Whether serve reads Graph's notifications from Event Hubs (nothing listens publicly). */}}
{{- define "graphbridge.eventhubs" -}}
{{- if eq .Values.source "eventhubs" }}true{{ end }}
{{- end }}

{{- define "graphbridge.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq ($v | int64 | float64) ($v | float64) }}{{ $v | int64 }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "graphbridge.toml.value" $e }}{{ end }}]
{{- else if kindIs "invalid" $v }}{{ fail "config: null values cannot be written to TOML; remove the key instead" }}
{{- else }}{{ fail (printf "config: cannot write %s to TOML" (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* "true" when a value is a non-empty list of maps: a TOML array of tables. */}}
{{- define "graphbridge.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $maps := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $maps = false }}{{ end }}{{ end }}
{{- if $maps }}true{{ end }}
{{- end }}
{{- end }}

{{/* One TOML table: scalar keys first, then sub-tables with dotted, quoted headers, then
arrays of tables (a list of maps, e.g. subscriptions.items) as [[header]] blocks. */}}
{{- define "graphbridge.toml.table" -}}
{{- $prefix := .prefix }}
{{- $table := .table }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if not (or (kindIs "map" $v) (include "graphbridge.toml.isTableArray" $v)) }}
{{ include "graphbridge.toml.key" $k }} = {{ include "graphbridge.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- $p := ternary (include "graphbridge.toml.key" $k) (printf "%s.%s" $prefix (include "graphbridge.toml.key" $k)) (eq $prefix "") }}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "graphbridge.toml.table" (dict "prefix" $p "table" $v) }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- $p := ternary (include "graphbridge.toml.key" $k) (printf "%s.%s" $prefix (include "graphbridge.toml.key" $k)) (eq $prefix "") }}
{{- if include "graphbridge.toml.isTableArray" $v }}
{{- range $item := $v }}

[[{{ $p }}]]
{{- include "graphbridge.toml.table" (dict "prefix" $p "table" $item) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "graphbridge.toml" -}}
# Rendered by the graphbridge Helm chart from .Values.config; edit the values, not this file.
{{- include "graphbridge.toml.table" (dict "prefix" "" "table" (include "graphbridge.effectiveConfig" . | fromYaml)) }}
{{ end }}

{{/* Shutdown takes up to shutdown_delay_ms + drain_timeout_ms, then the producer flushes (≤10 s). */}}
{{- define "graphbridge.shutdownSeconds" -}}
{{- $delay := dig "server" "shutdown_delay_ms" 0 .Values.config | int64 }}
{{- $drain := dig "server" "drain_timeout_ms" 10000 .Values.config | int64 }}
{{- div (add $delay $drain 999) 1000 }}
{{- end }}

{{- define "graphbridge.terminationGracePeriodSeconds" -}}
{{- $min := include "graphbridge.shutdownSeconds" . | int64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $min 15 }}
{{- else }}
{{- $set := .Values.terminationGracePeriodSeconds | int64 }}
{{- if le $set $min }}
{{- fail (printf "terminationGracePeriodSeconds=%d must exceed shutdown_delay_ms + drain_timeout_ms (%d s) plus the producer flush" $set $min) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{- define "graphbridge.checksum" -}}
{{- include "graphbridge.toml" . | sha256sum }}
{{- end }}

{{- define "graphbridge.subscriptionsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "graphbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: subscriptions
{{- end }}

{{- define "graphbridge.subscriptionsLabels" -}}
helm.sh/chart: {{ include "graphbridge.chart" . }}
{{ include "graphbridge.subscriptionsSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* A worker Deployment's labels: dict "ctx" (the root context) and "component". */}}
{{- define "graphbridge.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "graphbridge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "graphbridge.componentLabels" -}}
helm.sh/chart: {{ include "graphbridge.chart" .ctx }}
{{ include "graphbridge.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* helm test objects: never matched by serve's selectors. */}}
{{- define "graphbridge.testLabels" -}}
helm.sh/chart: {{ include "graphbridge.chart" . }}
app.kubernetes.io/name: {{ include "graphbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* A TOML key: bare when it can be, quoted otherwise (e.g. librdkafka's "security.protocol"). */}}
{{- define "graphbridge.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}
