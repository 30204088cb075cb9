{{/*
Names, labels, images, security contexts and the fleet server's settings environment, shared by
every template. The fleet server reads its settings from ROADSIGN_FLEET__SECTION__FIELD variables
(fleet_server/settings.py), so the migration hook needs no ConfigMap that would not exist yet.
*/}}

{{- define "roadsign-fleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "roadsign-fleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "roadsign-fleet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "roadsign-fleet.componentLabels" -}}
{{ include "roadsign-fleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from images.<name>: the digest wins over the tag. */}}
{{- define "roadsign-fleet.image" -}}
{{- $image := index .root.Values.images .name -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security: non-root (uid from .uid), RuntimeDefault seccomp, no API token. */}}
{{- define "roadsign-fleet.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .gid }}
  fsGroup: {{ .gid }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root filesystem, no privilege escalation, no capability. */}}
{{- define "roadsign-fleet.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{- define "roadsign-fleet.pullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "roadsign-fleet.brokerUrl" -}}
{{- if .Values.broker.enabled -}}
{{- printf "mqtts://%s-broker:%v" (include "roadsign-fleet.fullname" .) .Values.broker.port -}}
{{- else -}}
{{- required "broker.external.url is required when broker.enabled is false" .Values.broker.external.url -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the CA that verifies the broker (and is handed to devices). */}}
{{- define "roadsign-fleet.brokerCaSecret" -}}
{{- if .Values.broker.enabled -}}
{{- .Values.broker.tlsSecretName -}}
{{- else -}}
{{- .Values.broker.external.caSecretName -}}
{{- end -}}
{{- end -}}

{{- define "roadsign-fleet.brokerCaKey" -}}
{{- if .Values.broker.enabled -}}{{ .Values.broker.caKey }}{{- else -}}{{ .Values.broker.external.caKey }}{{- end -}}
{{- end -}}

{{- define "roadsign-fleet.publicOrigin" -}}
{{- if .Values.settings.auth.public_origin -}}
{{- .Values.settings.auth.public_origin -}}
{{- else if .Values.api.ingress.enabled -}}
{{- printf "https://%s" .Values.api.ingress.host -}}
{{- end -}}
{{- end -}}

{{/* Where the CA and the TUF online key are mounted in fleet-server containers. */}}
{{- define "roadsign-fleet.brokerCaDir" -}}/etc/roadsign-fleet/broker-ca{{- end -}}
{{- define "roadsign-fleet.tufDir" -}}/etc/roadsign-fleet/tuf{{- end -}}

{{- define "roadsign-fleet.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret | quote }}
      key: {{ .key | quote }}
{{- end -}}

{{/*
The fleet server's environment for one role: (dict "root" $ "role" "api|ingest|migrate|broker").
The API and broker-config manage the broker's dynamic-security accounts; ingest workers and
migrations get broker_auth none, so they never hold the broker admin's password.
*/}}
{{- define "roadsign-fleet.serverEnv" -}}
{{- $root := .root -}}
{{- $role := .role -}}
{{- $v := $root.Values -}}
{{- $fullname := include "roadsign-fleet.fullname" $root -}}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
# The broker pod runs this image as Mosquitto's uid, which has no home in it.
- name: HOME
  value: /tmp
{{- /* values.schema.json refuses settings the chart sets itself (tools/chart_values_schema.py). */}}
{{- range $section, $fields := $v.settings }}
{{- if kindIs "map" $fields }}
{{- range $field, $value := $fields }}
{{- if and (ne (toString $value) "") (not (and (eq $section "auth") (eq $field "public_origin"))) }}
- name: {{ printf "ROADSIGN_FLEET__%s__%s" $section $field | upper }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- else }}
- name: {{ printf "ROADSIGN_FLEET__%s" $section | upper }}
  value: {{ toString $fields | quote }}
{{- end }}
{{- end }}
{{- if $v.postgresql.enabled }}
{{- /* libpq reads the password from PGPASSWORD, so the URL carries none. */}}
{{ include "roadsign-fleet.secretEnv" (dict "name" "PGPASSWORD" "secret" $v.postgresql.passwordSecret.name "key" $v.postgresql.passwordSecret.key) }}
- name: ROADSIGN_FLEET__DATABASE__URL
  value: {{ printf "postgresql+psycopg://%s@%s-postgresql:%v/%s" $v.postgresql.username $fullname $v.postgresql.port $v.postgresql.database | quote }}
{{- else }}
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__DATABASE__URL" "secret" (required "postgresql.external.urlSecret.name is required when postgresql.enabled is false" $v.postgresql.external.urlSecret.name) "key" $v.postgresql.external.urlSecret.key) }}
{{- end }}
- name: ROADSIGN_FLEET__BROKER__URL
  value: {{ include "roadsign-fleet.brokerUrl" $root | quote }}
{{- if include "roadsign-fleet.brokerCaSecret" $root }}
- name: ROADSIGN_FLEET__BROKER__CA_FILE
  value: {{ printf "%s/%s" (include "roadsign-fleet.brokerCaDir" $root) (include "roadsign-fleet.brokerCaKey" $root) | quote }}
{{- end }}
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__BROKER__PASSWORD" "secret" $v.secrets.broker.name "key" $v.secrets.broker.serverPasswordKey) }}
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__AUTH__SECRET_KEY" "secret" $v.secrets.app.name "key" $v.secrets.app.secretKeyKey) }}
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__AUTH__BOOTSTRAP_ADMIN_TOKEN" "secret" $v.secrets.app.name "key" $v.secrets.app.bootstrapAdminTokenKey) }}
{{- if $v.telemetry.otlpEndpoint }}
- name: ROADSIGN_FLEET__TELEMETRY__OTLP_ENDPOINT
  value: {{ $v.telemetry.otlpEndpoint | quote }}
{{- else if $v.otel.enabled }}
- name: ROADSIGN_FLEET__TELEMETRY__OTLP_ENDPOINT
  value: {{ printf "http://%s-otel-collector:4318/v1/traces" $fullname | quote }}
{{- end }}
{{- if or (eq $role "api") (eq $role "broker") }}
- name: ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH
  value: dynamic_security
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__ENROLMENT__BROKER_ADMIN_PASSWORD" "secret" $v.secrets.broker.name "key" $v.secrets.broker.adminPasswordKey) }}
{{- else }}
- name: ROADSIGN_FLEET__ENROLMENT__BROKER_AUTH
  value: none
{{- end }}
{{- if eq $role "api" }}
- name: ROADSIGN_FLEET__HTTP__HOST
  value: "0.0.0.0"
- name: ROADSIGN_FLEET__HTTP__PORT
  value: {{ $v.api.port | quote }}
{{- with include "roadsign-fleet.publicOrigin" $root }}
- name: ROADSIGN_FLEET__AUTH__PUBLIC_ORIGIN
  value: {{ . | quote }}
{{- end }}
{{- if include "roadsign-fleet.brokerCaSecret" $root }}
- name: ROADSIGN_FLEET__ENROLMENT__CA_FILE
  value: {{ printf "%s/%s" (include "roadsign-fleet.brokerCaDir" $root) (include "roadsign-fleet.brokerCaKey" $root) | quote }}
{{- end }}
{{- if $v.tuf.onlineKey.secretName }}
- name: ROADSIGN_FLEET__TUF__ONLINE_KEY_FILE
  value: {{ printf "%s/%s" (include "roadsign-fleet.tufDir" $root) $v.tuf.onlineKey.keyFileKey | quote }}
{{ include "roadsign-fleet.secretEnv" (dict "name" "ROADSIGN_FLEET__TUF__ONLINE_KEY_PASSPHRASE" "secret" $v.tuf.onlineKey.secretName "key" $v.tuf.onlineKey.passphraseKey) }}
{{- end }}
{{- if $v.mlflow.enabled }}
- name: ROADSIGN_FLEET__TUF__MLFLOW_TRACKING_URI
  value: {{ printf "http://%s-mlflow:%v" $fullname $v.mlflow.port | quote }}
{{- end }}
- name: ROADSIGN_FLEET__ROLLOUTS__ENABLED
  value: {{ $v.api.rollouts.enabled | toString | quote }}
- name: ROADSIGN_FLEET__ROLLOUTS__TICK_S
  value: {{ $v.api.rollouts.tick_s | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volumes of a fleet-server pod: a writable /tmp, the broker's CA, the TUF key (API only). */}}
{{- define "roadsign-fleet.serverVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with include "roadsign-fleet.brokerCaSecret" .root }}
- name: broker-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ include "roadsign-fleet.brokerCaKey" $.root }}
        path: {{ include "roadsign-fleet.brokerCaKey" $.root }}
{{- end }}
{{- if and (eq .role "api") .root.Values.tuf.onlineKey.secretName }}
- name: tuf-online-key
  secret:
    secretName: {{ .root.Values.tuf.onlineKey.secretName }}
    defaultMode: 0400
    items:
      - key: {{ .root.Values.tuf.onlineKey.keyFileKey }}
        path: {{ .root.Values.tuf.onlineKey.keyFileKey }}
{{- end }}
{{- end -}}

{{- define "roadsign-fleet.serverVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "roadsign-fleet.brokerCaSecret" .root }}
- name: broker-ca
  mountPath: {{ include "roadsign-fleet.brokerCaDir" .root }}
  readOnly: true
{{- end }}
{{- if and (eq .role "api") .root.Values.tuf.onlineKey.secretName }}
- name: tuf-online-key
  mountPath: {{ include "roadsign-fleet.tufDir" .root }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* prometheus.io/* pod annotations for annotation-based scraping: (dict "root" $ "port" N). */}}
{{- define "roadsign-fleet.scrapeAnnotations" -}}
{{- if .root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "roadsign-fleet.hasServiceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") -}}true{{- end -}}
{{- end -}}
