{{/*
The serve pod, shared by the Deployment (stateless) and the StatefulSet (spool mode).
Writable paths: /var/lib/graphbridge (spool, and the working directory for relative paths) and
/tmp; everything else is the read-only image.
*/}}
{{- define "graphbridge.podTemplate" -}}
metadata:
  labels:
    {{- include "graphbridge.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "graphbridge.checksum" . }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "graphbridge.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "graphbridge.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: graphbridge
      image: {{ include "graphbridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if include "graphbridge.eventhubs" . }}
      args: ["--config", "/etc/graphbridge/config/graphbridge.toml", "serve", "--source", "eventhubs"]
      {{- else }}
      args: ["--config", "/etc/graphbridge/config/graphbridge.toml", "serve"]
      {{- end }}
      ports:
        {{- if not (include "graphbridge.eventhubs" .) }}
        - name: http
          containerPort: {{ include "graphbridge.httpPort" . }}
          protocol: TCP
        {{- end }}
        - name: admin
          containerPort: {{ include "graphbridge.adminPort" . }}
          protocol: TCP
      {{- with .Values.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      livenessProbe:
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      startupProbe:
        {{- toYaml .Values.probes.startup | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/graphbridge/config
          readOnly: true
        - name: keys
          mountPath: {{ dig "graph" "keys_dir" "/etc/graphbridge/keys" .Values.config }}
          readOnly: true
        {{- if .Values.clientState.existingSecret }}
        - name: client-state
          mountPath: /etc/graphbridge/secrets
          readOnly: true
        {{- end }}
        {{- if and (include "graphbridge.eventhubs" .) .Values.eventhubs.connectionString.existingSecret }}
        - name: eventhubs
          mountPath: /etc/graphbridge/eventhubs
          readOnly: true
        {{- end }}
        {{- include "graphbridge.brokersMount" . | nindent 8 }}
        - name: data
          mountPath: /var/lib/graphbridge
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "graphbridge.configVolume" . | nindent 4 }}
    {{- include "graphbridge.brokersVolume" . | nindent 4 }}
    - name: keys
      secret:
        secretName: {{ required "keys.existingSecret: name the Secret holding <encryptionCertificateId>.pem files" .Values.keys.existingSecret }}
        defaultMode: 0440
    {{- if .Values.clientState.existingSecret }}
    - name: client-state
      secret:
        secretName: {{ .Values.clientState.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.clientState.key }}
            path: client-state
    {{- end }}
    {{- if and (include "graphbridge.eventhubs" .) .Values.eventhubs.connectionString.existingSecret }}
    - name: eventhubs
      secret:
        secretName: {{ .Values.eventhubs.connectionString.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.eventhubs.connectionString.key }}
            path: connection-string
    {{- end }}
    {{- if not (include "graphbridge.spool" .) }}
    - name: data
      emptyDir: {}
    {{- end }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{ toYaml . | nindent 6 | trim }}
      labelSelector:
        matchLabels:
          {{- include "graphbridge.selectorLabels" $ | nindent 10 }}
    {{- end }}
  {{- end }}
{{- end }}

{{- define "graphbridge.configVolume" -}}
- name: config
{{- if .Values.existingConfigSecret }}
  secret:
    secretName: {{ .Values.existingConfigSecret }}
    items:
      - key: graphbridge.toml
        path: graphbridge.toml
{{- else }}
  configMap:
    name: {{ include "graphbridge.fullname" . }}
{{- end }}
{{- end }}

{{/* The broker credentials Secret (`brokers.existingSecret`): its mount, then its volume. */}}
{{- define "graphbridge.brokersMount" -}}
{{- if .Values.brokers.existingSecret }}
- name: brokers
  mountPath: /etc/graphbridge/brokers
  readOnly: true
{{- end }}
{{- end }}

{{- define "graphbridge.brokersVolume" -}}
{{- if .Values.brokers.existingSecret }}
- name: brokers
  secret:
    secretName: {{ .Values.brokers.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The Graph app credential Secret (`graphAuth.existingSecret`): mount, then volume. */}}
{{- define "graphbridge.graphAuthMount" -}}
{{- if .Values.graphAuth.existingSecret }}
- name: graph-auth
  mountPath: /etc/graphbridge/graph-auth
  readOnly: true
{{- end }}
{{- end }}

{{- define "graphbridge.graphAuthVolume" -}}
{{- if .Values.graphAuth.existingSecret }}
- name: graph-auth
  secret:
    secretName: {{ .Values.graphAuth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
