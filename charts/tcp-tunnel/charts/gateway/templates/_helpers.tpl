{{- define "gateway.fullname" -}}
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

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
interlink.io/role: gateway
{{- end }}

{{- define "gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gateway.hostKeySecret" -}}
{{- default (printf "%s-host-key" (include "gateway.fullname" .)) .Values.ssh.hostKeySecret }}
{{- end }}

{{- define "gateway.sshdConfig" -}}
# Rendered by the gateway chart (the same hardening as gateway-manager).
Port 2222
HostKey /etc/ssh/gateway/hostkey/ssh_host_ed25519_key
PidFile /tmp/sshd.pid
AuthorizedKeysFile /etc/ssh/gateway/config/authorized_keys
AllowUsers {{ .Values.ssh.userName }}
ClientAliveInterval {{ .Values.ssh.clientAliveInterval }}
ClientAliveCountMax {{ .Values.ssh.clientAliveCountMax }}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
PermitRootLogin no
PermitEmptyPasswords no
StrictModes no
AllowTcpForwarding remote
PermitOpen none
GatewayPorts clientspecified
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
PermitUserRC no
PermitUserEnvironment no
ForceCommand /bin/false
UseDNS no
TCPKeepAlive yes
LoginGraceTime 20
MaxAuthTries 3
MaxStartups 20:50:100
LogLevel VERBOSE
{{- end }}

{{- define "gateway.authorizedKeys" -}}
{{- $opts := list "restrict" "port-forwarding" "command=\"/bin/false\"" }}
{{- if .Values.ssh.allowedPorts }}
{{- range .Values.ssh.allowedPorts }}
{{- $opts = append $opts (printf "permitlisten=\"%s:%v\"" $.Values.ssh.listenHost .) }}
{{- end }}
{{- else }}
{{- $opts = append $opts (printf "permitlisten=\"%s:*\"" .Values.ssh.listenHost) }}
{{- end }}
{{- $key := required "ssh.publicKey is required: the bastion's OpenSSH public key" .Values.ssh.publicKey | trim }}
{{- $parts := splitList " " $key }}
{{- if $key }}
{{- if lt (len $parts) 2 }}{{ fail "ssh.publicKey must be one OpenSSH public key line: <type> <base64> [comment]" }}{{ end }}
{{- printf "%s %s %s" (join "," $opts) (index $parts 0) (index $parts 1) }}
{{- end }}
{{- end }}
