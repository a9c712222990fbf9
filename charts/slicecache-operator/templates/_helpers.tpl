{{/* Chart name, at most 63 characters. */}}
{{- define "slicecache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects: "<release>-operator", or the release
name alone when it already says operator ("slicecache" gives
"slicecache-operator").
*/}}
{{- define "slicecache.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "slicecache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slicecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slicecache.labels" -}}
{{ include "slicecache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: slicecache
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "slicecache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slicecache.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "slicecache.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "slicecache.agentImage" -}}
{{- printf "%s:%s" .Values.agentImage.repository (default .Chart.AppVersion .Values.agentImage.tag) -}}
{{- end -}}

{{/*
"true" when the Prometheus Operator objects are rendered: forced by
monitoring.prometheusOperator=always, or on "auto" when the cluster serves
monitoring.coreos.com/v1 (`helm template` needs
`--api-versions monitoring.coreos.com/v1` to see it).
*/}}
{{- define "slicecache.prometheusOperator" -}}
{{- $mode := .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* Job label of the agents' and the operator's scrape targets; the alerts use them. */}}
{{- define "slicecache.agentJob" -}}slicecache-agent{{- end -}}
{{- define "slicecache.operatorJob" -}}slicecache-operator{{- end -}}
