{{- define "bastion.fullname" -}}
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

{{- define "bastion.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
interlink.io/role: bastion
{{- end }}

{{- define "bastion.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "bastion.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bastion.keySecret" -}}
{{- default (include "bastion.fullname" .) .Values.tunnel.gateway.ssh.existingSecret }}
{{- end }}

{{/* offload-bastion's forwards file: one gateway, one forward. */}}
{{- define "bastion.forwards" -}}
{{- $t := .Values.tunnel }}
{{- $host := required "tunnel.gateway.host is required" $t.gateway.host }}
{{- $hostKey := required "tunnel.gateway.ssh.hostKey is required: the gateway's host public key, pinned" $t.gateway.ssh.hostKey | trim }}
{{- $target := required "tunnel.service.targetHost is required" $t.service.targetHost }}
{{- $gw := ternary (printf "[%s]:%v" $host $t.gateway.ssh.port) (printf "%s:%v" $host $t.gateway.ssh.port) (contains ":" $host) }}
{{- $tg := ternary (printf "[%s]:%v" $target $t.service.targetPort) (printf "%s:%v" $target $t.service.targetPort) (contains ":" $target) }}
{{- $fw := dict (toString $t.service.gatewayPort) $tg }}
{{- list (dict "gateway" $gw "hostKey" $hostKey "forwards" $fw) | toPrettyJson }}
{{- end }}
