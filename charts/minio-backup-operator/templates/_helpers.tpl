{{- define "mbo.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mbo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mbo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "mbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mbo.selector" -}}
app.kubernetes.io/name: {{ include "mbo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mbo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "mbo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "mbo.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding each group of settings: an existing one, or the chart's. */}}
{{- define "mbo.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "mbo.fullname" .)) -}}
{{- end -}}
{{- define "mbo.storeSecret" -}}
{{- .Values.objectStore.existingSecret | default (printf "%s-store" (include "mbo.fullname" .)) -}}
{{- end -}}
{{- define "mbo.tokensSecret" -}}
{{- .Values.apiTokens.existingSecret | default (printf "%s-api-tokens" (include "mbo.fullname" .)) -}}
{{- end -}}

{{- define "mbo.databaseKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}SQLALCHEMY_DATABASE_URL{{- end -}}
{{- end -}}

{{- define "mbo.storeEndpoint" -}}
{{- if .Values.trial.enabled -}}
{{ include "mbo.fullname" . }}-minio:9000
{{- else -}}
{{ required "objectStore.endpoint is required (host:port of MinIO), or set trial.enabled" .Values.objectStore.endpoint }}
{{- end -}}
{{- end -}}

{{- define "mbo.namespaces" -}}
{{- if .Values.watch.clusterWide -}}{{- else -}}{{ join "," (.Values.watch.namespaces | default (list .Release.Namespace)) }}{{- end -}}
{{- end -}}

{{- define "mbo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mbo.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Settings every process of the image reads. */}}
{{- define "mbo.commonEnv" -}}
- name: SQLALCHEMY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mbo.databaseSecret" . }}
      key: {{ include "mbo.databaseKey" . }}
- name: MINIO_ENDPOINT
  value: {{ include "mbo.storeEndpoint" . | quote }}
- name: MINIO_SECURE
  value: {{ .Values.objectStore.secure | quote }}
{{- with .Values.objectStore.region }}
- name: MINIO_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.publicEndpoint }}
- name: MINIO_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mbo.storeSecret" . }}
      key: MINIO_ACCESS_KEY
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mbo.storeSecret" . }}
      key: MINIO_SECRET_KEY
{{- with .Values.notifications.webhookSecret }}
- name: WEBHOOK_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: WEBHOOK_URL
{{- end }}
{{- end -}}

{{/*
A trial password (key "postgres" or "minio"): the one already in the trial Secret, else
generated once per render and remembered for the other templates of the same render.
*/}}
{{- define "mbo.trialPassword" -}}
{{- $root := .root -}}
{{- $memo := $root.Values.trial -}}
{{- $slot := printf "_password_%s" .key -}}
{{- if not (hasKey $memo $slot) -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (printf "%s-trial" (include "mbo.fullname" $root)) -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- $_ := set $memo $slot (index $existing.data .key | b64dec) -}}
{{- else -}}
{{- $_ := set $memo $slot (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- index $memo $slot -}}
{{- end -}}
