{{- define "tsretrain.labels" -}}
app.kubernetes.io/name: tsretrain
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tsretrain.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
