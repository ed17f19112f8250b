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

{{- /* The S3 endpoint the pods use: s3.endpoint, else this release's dev S3 server, else empty (AWS). */ -}}
{{- define "tsretrain.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{- .Values.s3.endpoint -}}
{{- else if .Values.devS3.enabled -}}
{{- printf "http://%s-s3:8333" .Release.Name -}}
{{- end -}}
{{- end -}}
