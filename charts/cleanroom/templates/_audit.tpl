{{/*
The audit service's address and CA, for its writers (the operator and the hub). Their Deployments include
these three snippets, so that every writer reaches the service over TLS checked against the chart's CA and
keeps its receipts in its outbox.
*/}}
{{- define "cleanroom.audit.url" -}}
https://{{ include "cleanroom.fullname" . }}-audit.{{ .Release.Namespace }}.svc:8090
{{- end }}

{{- define "cleanroom.audit.writerEnv" -}}
- {name: CLEANROOM_AUDIT_URL, value: {{ include "cleanroom.audit.url" . | quote }}}
- {name: CLEANROOM_AUDIT_CA_FILE, value: /etc/cleanroom/audit-ca/ca.crt}
- {name: CLEANROOM_AUDIT_TOKEN_FILE, value: /var/run/secrets/cleanroom/audit/token}
- {name: CLEANROOM_AUDIT_OUTBOX, value: /var/lib/cleanroom/audit-outbox}
{{- end }}

{{- define "cleanroom.audit.writerMounts" -}}
- {name: audit-ca, mountPath: /etc/cleanroom/audit-ca, readOnly: true}
{{- end }}

{{- define "cleanroom.audit.writerVolumes" -}}
- name: audit-ca
  configMap: {name: {{ include "cleanroom.fullname" . }}-audit-ca}
{{- end }}

{{/* The audit service's TLS Secret name: the chart's own, or one the platform provides (cert-manager). */}}
{{- define "cleanroom.audit.tlsSecret" -}}
{{- .Values.audit.service.tls.existingSecret | default (printf "%s-audit-tls" (include "cleanroom.fullname" .)) -}}
{{- end }}

{{- define "cleanroom.audit.webhookSecret" -}}
{{- .Values.audit.webhook.tokenSecret | default (printf "%s-audit-webhook" (include "cleanroom.fullname" .)) -}}
{{- end }}
