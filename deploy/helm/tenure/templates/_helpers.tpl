{{/*
Names, labels, and the pieces every workload shares: the image, the security context,
the environment (settings) and the volumes. The settings of one service are in
_env.tpl; the Deployment itself in _deployment.tpl.
*/}}

{{- define "tenure.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tenure.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, at most 63 characters. */}}
{{- define "tenure.component" -}}
{{- printf "%s-%s" (include "tenure.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tenure.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenure.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tenure.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tenure.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tenure
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "tenure.image" -}}
{{- $repository := required "image.repository is required: the registry path of the image built from deploy/Dockerfile (docker build -f deploy/Dockerfile -t REGISTRY/tenure:TAG .)" .Values.image.repository }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret the services read: an existing one, or the one this chart creates. */}}
{{- define "tenure.secretName" -}}
{{- default (include "tenure.component" (dict "root" . "component" "secrets")) .Values.secrets.existingSecret }}
{{- end }}

{{/* The Secret the hook Jobs read: the chart's own exists only after the hooks ran, so
they get a copy of what they need, created (and deleted) with them. */}}
{{- define "tenure.hookSecretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "tenure.component" (dict "root" . "component" "hooks") }}
{{- end }}
{{- end }}

{{/* An environment variable from a key of a Secret; optional ones are left unset when
the key is missing (then the setting's default applies). */}}
{{- define "tenure.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Checks of the values that `required` alone cannot express; fails naming the value. */}}
{{- define "tenure.validate" -}}
{{- $kafka := .Values.kafka }}
{{- $protocols := list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL" }}
{{- if not (has $kafka.securityProtocol $protocols) }}
{{- fail (printf "kafka.securityProtocol must be one of %s, not %q" (join ", " $protocols) $kafka.securityProtocol) }}
{{- end }}
{{- if hasPrefix "SASL_" $kafka.securityProtocol }}
{{- $mechanisms := list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512" }}
{{- if not (has $kafka.sasl.mechanism $mechanisms) }}
{{- fail (printf "kafka.sasl.mechanism must be one of %s with kafka.securityProtocol %s, not %q" (join ", " $mechanisms) $kafka.securityProtocol $kafka.sasl.mechanism) }}
{{- end }}
{{- $_ := required (printf "kafka.sasl.username is required with kafka.securityProtocol %s" $kafka.securityProtocol) $kafka.sasl.username }}
{{- if not .Values.secrets.existingSecret }}
{{- $_ := required (printf "secrets.kafkaSaslPassword is required with kafka.securityProtocol %s (or secrets.existingSecret with the key kafka-sasl-password)" $kafka.securityProtocol) .Values.secrets.kafkaSaslPassword }}
{{- end }}
{{- end }}
{{- if and $kafka.tls.existingSecret (not (hasSuffix "SSL" $kafka.securityProtocol)) }}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol is %s: TLS needs SSL or SASL_SSL" $kafka.securityProtocol) }}
{{- end }}
{{- if ne (empty $kafka.tls.certKey) (empty $kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS): set both or neither" }}
{{- end }}
{{- if and $kafka.tls.certKey (not $kafka.tls.existingSecret) }}
{{- fail "kafka.tls.certKey needs kafka.tls.existingSecret, the Secret holding the client certificate and key" }}
{{- end }}
{{- $modes := list "" "disable" "allow" "prefer" "require" "verify-ca" "verify-full" }}
{{- if not (has .Values.postgresql.sslmode $modes) }}
{{- fail (printf "postgresql.sslmode must be one of %s, not %q" (join ", " (rest $modes)) .Values.postgresql.sslmode) }}
{{- end }}
{{- if and (hasPrefix "verify-" .Values.postgresql.sslmode) (not .Values.postgresql.ca.existingSecret) }}
{{- fail (printf "postgresql.sslmode %s needs postgresql.ca.existingSecret, the Secret with the server's CA" .Values.postgresql.sslmode) }}
{{- end }}
{{- if not .Values.secrets.existingSecret }}
{{- $s := .Values.secrets }}
{{- $_ := required "secrets.databaseUrl is required: postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE (or secrets.existingSecret with the key database-url)" $s.databaseUrl }}
{{- $_ := required "secrets.linkSecret is required: the key that signs tracking and unsubscribe links (or secrets.existingSecret with the key link-secret)" $s.linkSecret }}
{{- $_ := required "secrets.webhookSecret is required: the webhook signing key, whsec_<base64> (or secrets.existingSecret with the key webhook-secret)" $s.webhookSecret }}
{{- if not (hasPrefix "whsec_" $s.webhookSecret) }}
{{- fail "secrets.webhookSecret must look like whsec_<base64 key of at least 16 bytes>" }}
{{- end }}
{{- if and .Values.notifier.replyDomain (lt (len $s.inboundSecret) 16) }}
{{- fail "notifier.replyDomain needs secrets.inboundSecret, at least 16 characters: the credential the inbound mail service posts replies with" }}
{{- end }}
{{- end }}
{{- $publicUrl := required "notifier.publicUrl is required: the https:// address recipients reach the notifier at (tracking, unsubscribe and inbox links)" .Values.notifier.publicUrl }}
{{- if not (hasPrefix "https://" $publicUrl) }}
{{- fail (printf "notifier.publicUrl must be https:// (RFC 8058: one-click unsubscribe links must be HTTPS), not %q" $publicUrl) }}
{{- end }}
{{- if and .Values.notifier.smtp.starttls .Values.notifier.smtp.implicitTls }}
{{- fail "notifier.smtp.starttls and notifier.smtp.implicitTls exclude each other" }}
{{- end }}
{{- end }}

{{/* The security context of every container. */}}
{{- define "tenure.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* Volumes every pod may have: /tmp, and the Kafka (.kafka) and PostgreSQL (.database)
certificates of a process that uses them. */}}
{{- define "tenure.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- with .root.Values.kafka.tls }}
{{- if and $.kafka .existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .caKey }}, path: ca.crt}
      {{- if .certKey }}
      - {key: {{ .certKey }}, path: tls.crt}
      - {key: {{ .keyKey }}, path: tls.key}
      {{- end }}
{{- end }}
{{- end }}
{{- with .root.Values.postgresql.ca }}
{{- if and $.database .existingSecret }}
- name: postgresql-ca
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .key }}, path: ca.crt}
{{- end }}
{{- end }}
{{- end }}

{{- define "tenure.commonMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .kafka .root.Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/tenure/kafka
  readOnly: true
{{- end }}
{{- if and .database .root.Values.postgresql.ca.existingSecret }}
- name: postgresql-ca
  mountPath: /etc/tenure/postgresql
  readOnly: true
{{- end }}
{{- end }}
