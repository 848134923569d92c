{{/* Name of the operator's objects. */}}
{{- define "sublet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if eq .Release.Name "sublet" -}}
sublet-operator
{{- else -}}
{{- printf "%s-sublet-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the operator's pods. */}}
{{- define "sublet.selectorLabels" -}}
app.kubernetes.io/name: sublet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of everything the chart installs. */}}
{{- define "sublet.labels" -}}
{{ include "sublet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sublet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the chart's objects that are not the operator's (dashboards, rules, CRs). */}}
{{- define "sublet.commonLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: sublet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sublet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sublet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sublet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether the cluster serves the Prometheus Operator's API. */}}
{{- define "sublet.hasMonitoring" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/* namespaceSelector of ServiceMonitors for the pods the operator runs. */}}
{{- define "sublet.watchedNamespaces" -}}
{{- if .Values.watchNamespace }}
matchNames: [{{ .Values.watchNamespace | quote }}]
{{- else }}
any: true
{{- end }}
{{- end -}}
