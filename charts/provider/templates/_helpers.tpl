{{- define "provider.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "provider.fullname" -}}
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

{{- define "provider.selectorLabels" -}}
app.kubernetes.io/name: {{ include "provider.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "provider.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "provider.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: provider
{{- end }}

{{- define "provider.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "provider.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Cluster-scoped objects carry the namespace: two releases of the same name in two namespaces must not share them. */}}
{{- define "provider.clusterName" -}}
{{- printf "offload-provider:%s:%s" .Release.Namespace (include "provider.fullname" .) }}
{{- end }}

{{- define "provider.tokenSecret" -}}
{{- if .Values.plugin.token.existingSecret }}
{{- .Values.plugin.token.existingSecret }}
{{- else if .Values.plugin.token.value }}
{{- printf "%s-plugin-token" (include "provider.fullname" .) }}
{{- end }}
{{- end }}

{{- define "provider.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Flags of the embedded gateway-manager (see `offload-provider --help`, "Tunnel"). */}}
{{- define "provider.gatewayArgs" -}}
{{- if .Values.gateway.enabled -}}
- --gateway-address={{ default "$(HOST_IP)" .Values.gateway.publicAddress }}
- --gateway-namespace=$(POD_NAMESPACE)
- --gateway-name={{ .Values.gateway.name }}
- --gateway-image={{ printf "%s:%s" .Values.gateway.image.repository .Values.gateway.image.tag }}
- --gateway-image-pull-policy={{ .Values.gateway.image.pullPolicy }}
- --gateway-node-port={{ .Values.gateway.nodePort }}
- --gateway-port-range={{ .Values.gateway.portRange }}
- --gateway-sync-interval={{ .Values.gateway.syncInterval }}
{{- with .Values.gateway.bastionPublicKey }}
- --bastion-public-key={{ . | trim }}
{{- end }}
- --bastion-key-refresh={{ .Values.gateway.bastionKeyRefresh }}
{{- end }}
{{- end }}
