{{- define "plugin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "plugin.fullname" -}}
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

{{- define "plugin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plugin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "plugin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "plugin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: plugin
{{- end }}

{{- define "plugin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "plugin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Cluster-scoped objects carry the namespace: two releases of the same name in two namespaces must not share them. */}}
{{- define "plugin.clusterName" -}}
{{- printf "offload-plugin:%s:%s" .Release.Namespace (include "plugin.fullname" .) }}
{{- end }}

{{- define "plugin.tokenSecret" -}}
{{- default (printf "%s-token" (include "plugin.fullname" .)) .Values.token.existingSecret }}
{{- end }}

{{- define "plugin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "plugin.bastionImage" -}}
{{- printf "%s:%s" .Values.bastion.image.repository (default .Chart.AppVersion .Values.bastion.image.tag) }}
{{- end }}

{{/* The config file: every key a long flag name of offload-plugin. */}}
{{- define "plugin.config" -}}
{{- $c := dict
  "listen" (printf "0.0.0.0:%v" .Values.port)
  "token-file" (printf "/var/run/offload/token/%s" .Values.token.key)
  "namespace-prefix" .Values.namespacePrefix
  "namespace-prefix-exclusions" (join "," .Values.namespacePrefixExclusions)
  "keep-kubernetes-env" .Values.keepKubernetesEnv
  "body-limit" .Values.bodyLimit
  "instance" (default (include "plugin.fullname" .) .Values.instance)
  "max-concurrent-requests" .Values.maxConcurrentRequests
  "request-timeout" .Values.requestTimeout
  "status-watch" .Values.statusWatch.enabled
  "max-watch-streams" .Values.statusWatch.maxStreams
  "status-watch-history" .Values.statusWatch.history
  "allow-host-path" .Values.policy.allowHostPath
  "allow-privileged" .Values.policy.allowPrivileged
  "allow-host-network" .Values.policy.allowHostNetwork
  "allow-host-pid" .Values.policy.allowHostPID
  "allow-host-ipc" .Values.policy.allowHostIPC
  "pod-security-level" .Values.policy.level
  "allow-volume-types" (join "," .Values.policy.allowedVolumeTypes)
  "allow-capabilities" (join "," .Values.policy.allowedCapabilities)
  "allow-sysctls" (join "," .Values.policy.allowedSysctls)
  "keep-security-annotations" (join "," .Values.policy.keepSecurityAnnotations)
  "no-sweep" (not .Values.sweep.enabled)
  "sweep-interval" .Values.sweep.interval
  "orphan-after" .Values.sweep.orphanAfter
  "orphan-finished-after" .Values.sweep.orphanFinishedAfter
  "caller-alive-within" .Values.sweep.callerAliveWithin
  "namespace-gc-after" (ternary .Values.namespaceGc.after "0s" .Values.namespaceGc.enabled)
  "namespace-gc-interval" .Values.namespaceGc.interval
  "log-json" .Values.logJson
}}
{{- with .Values.remoteNodeSelector }}{{ $_ := set $c "node-selector" (toJson .) }}{{ end }}
{{- with .Values.remoteTolerations }}{{ $_ := set $c "node-tolerations" (toJson .) }}{{ end }}
{{- if include "plugin.tlsSecret" . }}
{{- $_ := set $c "tls-cert" "/var/run/offload/tls/tls.crt" }}
{{- $_ := set $c "tls-key" "/var/run/offload/tls/tls.key" }}
{{- end }}
{{- if .Values.tls.clientCASecret }}
{{- $_ := set $c "tls-client-ca" "/var/run/offload/client-ca/ca.crt" }}
{{- end }}
{{- if .Values.bastion.enabled }}
{{- $_ := set $c "bastion-namespace" .Release.Namespace }}
{{- $_ := set $c "bastion-name" .Values.bastion.name }}
{{- $_ := set $c "bastion-image" (include "plugin.bastionImage" .) }}
{{- $_ := set $c "bastion-image-pull-policy" .Values.bastion.image.pullPolicy }}
{{- $_ := set $c "bastion-resync-interval" .Values.bastion.resyncInterval }}
{{- $_ := set $c "bastion-replicas" .Values.bastion.replicas }}
{{- with .Values.bastion.watchNamespace }}{{ $_ := set $c "bastion-watch-namespace" . }}{{ end }}
{{- else }}
{{- $_ := set $c "no-bastion" true }}
{{- end }}
{{- toYaml (merge (deepCopy .Values.extraConfig) $c) }}
{{- end }}


{{/* The Secret with the API's serving certificate; empty: plain HTTP (tls.insecure). */}}
{{- define "plugin.tlsSecret" -}}
{{- if not .Values.tls.insecure }}
{{- default (printf "%s-tls" (include "plugin.fullname" .)) .Values.tls.secret }}
{{- end }}
{{- end }}
