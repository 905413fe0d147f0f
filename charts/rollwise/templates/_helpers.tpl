{{/*
The chart name, truncated to 63 characters (a label value's limit).
*/}}
{{- define "rollwise.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: the release name when it already contains
the chart name (`helm install rollwise` gives "rollwise"), else
"<release>-<chart>".
*/}}
{{- define "rollwise.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rollwise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator's pods (stable across upgrades).
*/}}
{{- define "rollwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "rollwise.labels" -}}
helm.sh/chart: {{ include "rollwise.chart" . }}
{{ include "rollwise.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rollwise
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rollwise.serviceAccountName" -}}
{{- include "rollwise.fullname" . }}
{{- end }}

{{- define "rollwise.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Leader election is on whenever more than one replica runs: only the holder
of the Lease reconciles, the others stand by.
*/}}
{{- define "rollwise.leaderElection" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{- define "rollwise.leaseName" -}}
{{- printf "%s-leader" (include "rollwise.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The one namespace watched, or "" for all namespaces. `rollwise run` watches
either one namespace or all of them, so a list of more than one fails here.
*/}}
{{- define "rollwise.watchNamespace" -}}
{{- $ns := .Values.watchNamespaces | default list }}
{{- if gt (len $ns) 1 }}
{{- fail (printf "watchNamespaces: rollwise watches one namespace or all of them, got %d (%s). Set watchNamespaces to [] (all namespaces) or to exactly one namespace, or install one release per namespace." (len $ns) (join ", " $ns)) }}
{{- end }}
{{- if eq (len $ns) 1 }}
{{- $one := first $ns | toString }}
{{- if not $one }}
{{- fail "watchNamespaces: the namespace name is empty" }}
{{- end }}
{{- $one }}
{{- end }}
{{- end }}
