{{- define "tidepool.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tidepool.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tidepool.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tidepool.serviceAccount" -}}
{{- default (include "tidepool.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tidepool.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The Secret holding a dataset's worker token, named as the operator names it
(tidepool.operator.render.token_secret_name): "tidepool-<dataset>-token", cut to 52 characters
with a hash of the full name when longer.
*/}}
{{- define "tidepool.tokenSecret" -}}
{{- $name := printf "tidepool-%s-token" . | lower -}}
{{- if le (len $name) 52 -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "-+$" (trunc 43 $name) "") (sha256sum $name | trunc 8) -}}
{{- end -}}
{{- end -}}
