{{/* Names and labels. */}}

{{/* A scalar as text: whole numbers without the exponent Go gives large float64s
(values files parse 604800000 as 6.048e+08). */}}
{{- define "fleet-backend.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "fleet-backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleet-backend.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fleet-backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleet-backend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleet-backend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fleet-backend.labels" -}}
helm.sh/chart: {{ include "fleet-backend.chart" . }}
{{ include "fleet-backend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fleet-backend
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "fleet-backend.componentLabels" -}}
{{ include "fleet-backend.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fleet-backend.componentSelectorLabels" -}}
{{ include "fleet-backend.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fleet-backend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fleet-backend.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fleet-backend.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret with FLEET_* secrets: the operator's, or the chart's when it makes one. */}}
{{- define "fleet-backend.secretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else if .Values.secrets -}}
{{- printf "%s-env" (include "fleet-backend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Settings that must not sit in the ConfigMap, and the ConfigMap's data: `config`, the topic
names from `topics` and the Kafka bootstrap servers. Fails on a secret in `config`.
*/}}
{{- define "fleet-backend.configData" -}}
{{- $secretNames := list "FLEET_DATABASE_URL" "DATABASE_URL" "FLEET_SECRET_KEY" -}}
{{- $data := dict -}}
{{- range $name, $value := .Values.config -}}
{{- if has $name $secretNames -}}
{{- fail (printf "config.%s is a secret: put it in the Secret named by existingSecret (or in secrets)" $name) -}}
{{- end -}}
{{- $_ := set $data $name (include "fleet-backend.scalar" $value) -}}
{{- end -}}
{{- range $setting, $topic := .Values.topics -}}
{{- $_ := set $data $setting (required (printf "topics.%s.name is required" $setting) $topic.name) -}}
{{- end -}}
{{- $_ := set $data "FLEET_KAFKA_BOOTSTRAP_SERVERS" (required "kafka.bootstrapServers is required (Kafka is external)" .Values.kafka.bootstrapServers) -}}
{{- $_ := set $data "FLEET_DATA_DIR" .Values.storage.dataDir -}}
{{- $_ := set $data "HOME" "/tmp" -}}
{{- toYaml $data -}}
{{- end -}}

{{/*
Every long-running component as a list of dicts, the single source of the Deployments,
autoscalers and disruption budgets: the API, one entry per enabled worker (its values are
`workerDefaults` overridden by the worker's own), the dispatcher and the privacy job.
*/}}
{{- define "fleet-backend.components" -}}
{{- $components := list -}}
{{- if .Values.api.enabled -}}
{{- $args := list "api" "--host" "0.0.0.0" "--port" (toString .Values.api.port) "--workers" (toString .Values.api.uvicornWorkers) -}}
{{- $components = append $components (dict "name" "api" "args" $args "values" .Values.api "portName" "http" "port" .Values.api.port "liveness" "/healthz" "readiness" "/readyz" "metrics" false "otaKeys" true "partnerKey" true) -}}
{{- end -}}
{{- range $worker, $overrides := .Values.workers -}}
{{- /* workerDefaults overlaid with the worker's keys; nested maps (resources, pdb,
  autoscaling...) key by key. Not sprig's mergeOverwrite: it ignores false and 0. */ -}}
{{- $values := deepCopy $.Values.workerDefaults -}}
{{- range $key, $value := (default dict $overrides) -}}
{{- $default := get $values $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $default) -}}
{{- range $nestedKey, $nestedValue := $value -}}
{{- $_ := set $default $nestedKey $nestedValue -}}
{{- end -}}
{{- else -}}
{{- $_ := set $values $key $value -}}
{{- end -}}
{{- end -}}
{{- if $values.enabled -}}
{{- if not (regexMatch "^[a-z][a-z0-9-]*$" $worker) -}}
{{- fail (printf "workers.%s: a worker name is lower-case letters, digits and dashes" $worker) -}}
{{- end -}}
{{- $args := list "worker" $worker "--log-level" $values.logLevel -}}
{{- $components = append $components (dict "name" (printf "worker-%s" $worker) "args" $args "values" $values "portName" "metrics" "port" $.Values.metrics.port "liveness" "/healthz" "readiness" "/readyz" "metrics" true "otaKeys" $values.mountOtaKeys "partnerKey" false) -}}
{{- end -}}
{{- end -}}
{{- if .Values.dispatcher.enabled -}}
{{- $args := list "services" "deliver" "--log-level" .Values.dispatcher.logLevel -}}
{{- $components = append $components (dict "name" "dispatcher" "args" $args "values" .Values.dispatcher "portName" "metrics" "port" .Values.metrics.port "liveness" "/healthz" "readiness" "/readyz" "metrics" true "otaKeys" false "partnerKey" false) -}}
{{- end -}}
{{- if .Values.privacy.enabled -}}
{{- $values := merge (dict "replicas" 1 "autoscaling" (dict "enabled" false) "topologySpreadConstraints" (list)) (deepCopy .Values.privacy) -}}
{{- $args := list "privacy" "run" "--log-level" .Values.privacy.logLevel -}}
{{- $components = append $components (dict "name" "privacy" "args" $args "values" $values "portName" "metrics" "port" .Values.metrics.port "liveness" "/healthz" "readiness" "/readyz" "metrics" true "otaKeys" false "partnerKey" false) -}}
{{- end -}}
{{- toYaml (dict "components" $components) -}}
{{- end -}}

{{/* Common env of every container (settings that follow from other values). */}}
{{- define "fleet-backend.env" -}}
{{- $root := .root -}}
{{- if .metrics }}
- name: FLEET_METRICS_HOST
  value: "0.0.0.0"
- name: FLEET_METRICS_PORT
  value: {{ $root.Values.metrics.port | quote }}
{{- end }}
{{- if and .otaKeys $root.Values.otaKeys.existingSecret }}
- name: FLEET_OTA_KEYS_DIR
  value: {{ $root.Values.otaKeys.mountPath | quote }}
{{- end }}
{{- if and .partnerKey $root.Values.partnerSigningKey.existingSecret }}
- name: FLEET_PARTNER_SIGNING_KEY_PATH
  value: {{ printf "%s/%s" $root.Values.partnerSigningKey.mountPath $root.Values.partnerSigningKey.key | quote }}
{{- end }}
{{- end -}}

{{/* envFrom: the ConfigMap and the Secret. */}}
{{- define "fleet-backend.envFrom" -}}
- configMapRef:
    name: {{ include "fleet-backend.fullname" . }}
{{- with include "fleet-backend.secretName" . }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Volumes every pod has: emptyDirs for /tmp and the data directory, keys when asked. */}}
{{- define "fleet-backend.volumes" -}}
{{- $root := .root -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ $root.Values.storage.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ $root.Values.storage.dataSizeLimit }}
{{- if and .otaKeys $root.Values.otaKeys.existingSecret }}
- name: ota-keys
  secret:
    secretName: {{ $root.Values.otaKeys.existingSecret }}
    defaultMode: 0440
    {{- with $root.Values.otaKeys.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- if and .partnerKey $root.Values.partnerSigningKey.existingSecret }}
- name: partner-signing-key
  secret:
    secretName: {{ $root.Values.partnerSigningKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.partnerSigningKey.key }}
        path: {{ $root.Values.partnerSigningKey.key }}
{{- end }}
{{- end -}}

{{- define "fleet-backend.volumeMounts" -}}
{{- $root := .root -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ $root.Values.storage.dataDir }}
{{- if and .otaKeys $root.Values.otaKeys.existingSecret }}
- name: ota-keys
  mountPath: {{ $root.Values.otaKeys.mountPath }}
  readOnly: true
{{- end }}
{{- if and .partnerKey $root.Values.partnerSigningKey.existingSecret }}
- name: partner-signing-key
  mountPath: {{ $root.Values.partnerSigningKey.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget's budget: minAvailable when set, else maxUnavailable. */}}
{{- define "fleet-backend.pdbBudget" -}}
{{- if not (kindIs "invalid" .minAvailable) -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ required "pdb.maxUnavailable or pdb.minAvailable is required" .maxUnavailable }}
{{- end -}}
{{- end -}}
