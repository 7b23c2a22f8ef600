{{/* Names and labels shared by every template. */}}
{{- define "cleanroom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "cleanroom.labels" -}}
app.kubernetes.io/part-of: cleanroom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* An image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "cleanroom.image" -}}
{{- if .digest -}}{{ .repository }}@{{ .digest }}{{- else -}}{{ .repository }}:{{ .tag }}{{- end -}}
{{- end -}}

{{- define "cleanroom.s3Endpoint" -}}
{{- if .Values.snapshots.endpoint -}}{{ .Values.snapshots.endpoint }}{{- else -}}http://{{ include "cleanroom.fullname" . }}-s3.{{ .Release.Namespace }}.svc:7070{{- end -}}
{{- end -}}

{{/* The restricted Pod Security profile, for every container the chart runs. */}}
{{- define "cleanroom.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "cleanroom.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "cleanroom.pullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* nodeSelector and tolerations of a pod, from a component's values (a dict with nodeSelector, tolerations). */}}
{{- define "cleanroom.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Prometheus's pods as a NetworkPolicy peer (metrics.prometheus): both selectors must match. */}}
{{- define "cleanroom.metrics.scraper" -}}
{{ dict "namespaceSelector" .Values.metrics.prometheus.namespaceSelector "podSelector" .Values.metrics.prometheus.podSelector | toJson }}
{{- end -}}
