{{/*
The settings of each process as environment variables. Every TENURE_* name here is a
field of a settings class (libs/common/settings.py, services/<name>/settings.py): a test
renders the chart and checks each one. PGSSLMODE and PGSSLROOTCERT are libpq's, read by
the driver (asyncpg).

"tenure.env" renders a dict of plain values (the service's .env on top: it wins) and a
list of secret references, each once, sorted by name.
*/}}

{{- define "tenure.env" -}}
{{- $plain := merge (dict) .extra .plain }}
{{- range $name := keys $plain | sortAlpha }}
- name: {{ $name }}
  value: {{ get $plain $name | toString | quote }}
{{- end }}
{{- range .secrets }}
{{- if not (hasKey $plain .name) }}
{{ include "tenure.secretEnv" . }}
{{- end }}
{{- end }}
{{- end }}

{{/* What every process shares (CommonSettings): Kafka when .kafka, PostgreSQL when
.database. Sets keys of .plain and appends to .secrets. */}}
{{- define "tenure.commonEnv" -}}
{{- $v := .root.Values }}
{{- $plain := .plain }}
{{- $_ := set $plain "TENURE_LOG_LEVEL" $v.logLevel }}
{{- $_ := set $plain "TENURE_LOG_FORMAT" $v.logFormat }}
{{- if .kafka }}
{{- $_ := set $plain "TENURE_KAFKA_BOOTSTRAP" (required "kafka.bootstrapServers is required: the external Kafka's bootstrap servers, host:port[,host:port...]" $v.kafka.bootstrapServers) }}
{{- $_ := set $plain "TENURE_TOPIC_PREFIX" $v.kafka.topicPrefix }}
{{- $_ := set $plain "TENURE_TOPIC_PARTITIONS" $v.kafka.topicPartitions }}
{{- $_ := set $plain "TENURE_TOPIC_REPLICATION_FACTOR" $v.kafka.replicationFactor }}
{{- $_ := set $plain "TENURE_TOPIC_MIN_INSYNC_REPLICAS" $v.kafka.minInsyncReplicas }}
{{- range $class, $ms := $v.kafka.retentionMs }}
{{- if $ms }}
{{- $_ := set $plain (printf "TENURE_TOPIC_RETENTION_%s_MS" (upper $class)) (int64 $ms) }}
{{- end }}
{{- end }}
{{- $_ := set $plain "TENURE_KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol }}
{{- if hasPrefix "SASL_" $v.kafka.securityProtocol }}
{{- $_ := set $plain "TENURE_KAFKA_SASL_MECHANISM" $v.kafka.sasl.mechanism }}
{{- $_ := set $plain "TENURE_KAFKA_SASL_USERNAME" $v.kafka.sasl.username }}
{{- $_ := set .box "secrets" (append .box.secrets (dict "name" "TENURE_KAFKA_SASL_PASSWORD" "secret" .secret "key" "kafka-sasl-password")) }}
{{- end }}
{{- if $v.kafka.tls.existingSecret }}
{{- $_ := set $plain "TENURE_KAFKA_SSL_CAFILE" "/etc/tenure/kafka/ca.crt" }}
{{- if $v.kafka.tls.certKey }}
{{- $_ := set $plain "TENURE_KAFKA_SSL_CERTFILE" "/etc/tenure/kafka/tls.crt" }}
{{- $_ := set $plain "TENURE_KAFKA_SSL_KEYFILE" "/etc/tenure/kafka/tls.key" }}
{{- end }}
{{- end }}
{{- end }}
{{- if .database }}
{{- $_ := set .box "secrets" (append .box.secrets (dict "name" "TENURE_DATABASE_URL" "secret" .secret "key" "database-url")) }}
{{- if $v.postgresql.sslmode }}
{{- $_ := set $plain "PGSSLMODE" $v.postgresql.sslmode }}
{{- end }}
{{- if $v.postgresql.ca.existingSecret }}
{{- $_ := set $plain "PGSSLROOTCERT" "/etc/tenure/postgresql/ca.crt" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The environment of one service's container (.component: ingest, scoring, ...). */}}
{{- define "tenure.serviceEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $c := .component }}
{{- $s := get $v $c }}
{{- $secret := include "tenure.secretName" $root }}
{{- $plain := dict }}
{{- $box := dict "secrets" (list) }}
{{- $prefix := printf "TENURE_%s_" (upper $c) }}
{{- include "tenure.commonEnv" (dict "root" $root "plain" $plain "box" $box "secret" $secret "kafka" true "database" (ne $c "scoring")) }}
{{- if eq $c "scoring" }}
{{- $_ := set $plain "TENURE_SCORING_METRICS_HOST" "0.0.0.0" }}
{{- $_ := set $plain "TENURE_SCORING_METRICS_PORT" $s.metricsPort }}
{{- $_ := set $plain "TENURE_SCORING_DATA_DIR" $s.dataDir }}
{{- if or $s.model $s.modelConfigMap }}
{{- $_ := set $plain "TENURE_SCORING_MODEL_PATH" "/etc/tenure/scoring/model.yaml" }}
{{- end }}
{{- else }}
{{- /* The HTTP services: every interface, /metrics apart, no API documentation. */}}
{{- $_ := set $plain (printf "%sHOST" $prefix) "0.0.0.0" }}
{{- $_ := set $plain (printf "%sPORT" $prefix) $s.port }}
{{- $_ := set $plain (printf "%sMETRICS_PORT" $prefix) $s.metricsPort }}
{{- $_ := set $plain (printf "%sDOCS" $prefix) "false" }}
{{- end }}
{{- if eq $c "ingest" }}
{{- $_ := set $plain "TENURE_INGEST_WORKERS" $s.workers }}
{{- $_ := set $box "secrets" (append $box.secrets (dict "name" "TENURE_INGEST_API_KEY" "secret" $secret "key" "ingest-api-key" "optional" true)) }}
{{- end }}
{{- if and (eq $c "orchestrator") (or $s.playbooks $s.playbooksConfigMap) }}
{{- $_ := set $plain "TENURE_ORCHESTRATOR_PLAYBOOKS_DIR" "/etc/tenure/playbooks" }}
{{- end }}
{{- if eq $c "notifier" }}
{{- $_ := set $plain "TENURE_NOTIFIER_PUBLIC_URL" $s.publicUrl }}
{{- $_ := set $plain "TENURE_NOTIFIER_SMTP_HOST" (required "notifier.smtp.host is required: the mail server or relay the notifier sends through" $s.smtp.host) }}
{{- $_ := set $plain "TENURE_NOTIFIER_SMTP_PORT" $s.smtp.port }}
{{- $_ := set $plain "TENURE_NOTIFIER_SMTP_TLS" $s.smtp.starttls }}
{{- $_ := set $plain "TENURE_NOTIFIER_SMTP_IMPLICIT_TLS" $s.smtp.implicitTls }}
{{- if $s.smtp.username }}
{{- $_ := set $plain "TENURE_NOTIFIER_SMTP_USERNAME" $s.smtp.username }}
{{- end }}
{{- $_ := set $plain "TENURE_NOTIFIER_MAIL_FROM" $s.mailFrom }}
{{- if $s.replyDomain }}
{{- $_ := set $plain "TENURE_NOTIFIER_REPLY_DOMAIN" $s.replyDomain }}
{{- end }}
{{- $_ := set $plain "TENURE_NOTIFIER_WEBHOOK_CSM_URL" (required "notifier.webhooks.csmUrl is required: where CSM tasks are posted" $s.webhooks.csmUrl) }}
{{- $_ := set $plain "TENURE_NOTIFIER_WEBHOOK_ESCALATION_URL" (required "notifier.webhooks.escalationUrl is required: where escalations are posted" $s.webhooks.escalationUrl) }}
{{- if $s.webhooks.endpoints }}
{{- $_ := set $plain "TENURE_NOTIFIER_WEBHOOK_ENDPOINTS" (toJson $s.webhooks.endpoints) }}
{{- end }}
{{- if $s.webhooks.slackTargets }}
{{- $_ := set $plain "TENURE_NOTIFIER_WEBHOOK_SLACK_TARGETS" (toJson $s.webhooks.slackTargets) }}
{{- end }}
{{- if $s.webhooks.allowHosts }}
{{- $_ := set $plain "TENURE_NOTIFIER_WEBHOOK_ALLOW_HOSTS" (toJson $s.webhooks.allowHosts) }}
{{- end }}
{{- if $s.landingUrl }}
{{- $_ := set $plain "TENURE_NOTIFIER_LANDING_URL" $s.landingUrl }}
{{- end }}
{{- if $s.appUrl }}
{{- $_ := set $plain "TENURE_NOTIFIER_APP_URL" $s.appUrl }}
{{- end }}
{{- range $name, $key := dict "TENURE_NOTIFIER_LINK_SECRET" "link-secret" "TENURE_NOTIFIER_WEBHOOK_SECRET" "webhook-secret" }}
{{- $_ := set $box "secrets" (append $box.secrets (dict "name" $name "secret" $secret "key" $key)) }}
{{- end }}
{{- range $name, $key := dict "TENURE_NOTIFIER_LINK_PREVIOUS_SECRETS" "link-previous-secrets" "TENURE_NOTIFIER_SMTP_PASSWORD" "smtp-password" "TENURE_NOTIFIER_INBOUND_SECRET" "inbound-secret" "TENURE_NOTIFIER_INBOX_SECRET" "inbox-secret" }}
{{- $_ := set $box "secrets" (append $box.secrets (dict "name" $name "secret" $secret "key" $key "optional" true)) }}
{{- end }}
{{- end }}
{{- include "tenure.env" (dict "plain" $plain "extra" (merge (dict) $s.env $v.env) "secrets" $box.secrets) }}
{{- end }}
