{{/* Names and labels shared by every template. */}}

{{- define "mde.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "mde.fullname" -}}
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

{{- define "mde.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mde.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mde.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mde-liveresponse-exporter
{{- end }}

{{- define "mde.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mde.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mde.secretName" -}}
{{- default (printf "%s-credentials" (include "mde.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{- define "mde.configMapName" -}}
{{- default (printf "%s-config" (include "mde.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/* The image: repository@digest when image.digest is set (a pinned, verifiable image), else
repository:tag (tag default: the chart's appVersion). */}}
{{- define "mde.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* Cluster mode (#31): members share tenants and state through PostgreSQL. */}}
{{- define "mde.cluster" -}}
{{- if .Values.cluster.enabled }}true{{ end }}
{{- end }}

{{- define "mde.postgresSecretName" -}}
{{- default (printf "%s-postgres" (include "mde.fullname" .)) .Values.cluster.existingSecret }}
{{- end }}

{{/* The exporter's config.yml: `config`, and in cluster mode its `cluster:` section (the URL
from the Secret's variable, the member named after the pod), keys the values set winning. */}}
{{- define "mde.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.cluster.enabled }}
{{- $cluster := deepCopy (default (dict) (get $config "cluster")) }}
{{- $_ := merge $cluster (dict "postgres_url" "${MDE_CLUSTER_POSTGRES_URL}" "lease_duration" .Values.cluster.leaseDuration "member" "${POD_NAME}") }}
{{- $_ := set $config "cluster" $cluster }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- define "mde.sharded" -}}
{{- if gt (int .Values.shards) 1 }}true{{ end }}
{{- end }}

{{/* The job label the alerts expect (MdeExporterDown matches job="mde-liveresponse-exporter"). */}}
{{- define "mde.jobLabel" -}}mde-liveresponse-exporter{{- end }}

{{/* Checks that a schema cannot express. */}}
{{- define "mde.validate" -}}
{{- if and .Values.credentials.create (not .Values.credentials.secrets) }}
{{- fail "credentials.create is true but credentials.secrets is empty" }}
{{- end }}
{{- if and (not .Values.credentials.create) .Values.credentials.secrets }}
{{- fail "credentials.secrets is set but credentials.create is false: set create=true, or put the keys in credentials.existingSecret" }}
{{- end }}
{{- if and .Values.workloadIdentity.enabled (not .Values.workloadIdentity.clientId) }}
{{- fail "workloadIdentity.enabled needs workloadIdentity.clientId (the app registration's client id)" }}
{{- end }}
{{- if and .Values.cluster.enabled (include "mde.sharded" .) }}
{{- fail "cluster.enabled and shards > 1 exclude each other: a cluster shares the tenants by itself (set shards: 1)" }}
{{- end }}
{{- if and (include "mde.sharded" .) .Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim works with shards: 1 only (each shard has its own volume)" }}
{{- end }}
{{- end }}

{{- define "mde.pvcSpec" -}}
accessModes:
  {{- toYaml .Values.persistence.accessModes | nindent 2 }}
{{- with .Values.persistence.storageClassName }}
storageClassName: {{ . | quote }}
{{- end }}
resources:
  requests:
    storage: {{ .Values.persistence.size | quote }}
{{- end }}
