{{/* The airlock's download key (exports.download): the Secret holding the outbox reader's key, and the checks
that keep it apart from the snapshots. */}}
{{- define "cleanroom.exports.readerSecret" -}}
{{- .Values.exports.download.readerSecret | default (printf "%s-export-reader" (include "cleanroom.fullname" .)) -}}
{{- end -}}

{{/* Whether the chart makes the reader's key itself (the bundled S3 server, no Secret named). */}}
{{- define "cleanroom.exports.makesReader" -}}
{{- if and .Values.s3.bundled.enabled (not .Values.exports.download.readerSecret) -}}true{{- end -}}
{{- end -}}

{{- define "cleanroom.exports.check" -}}
{{- if eq .Values.exports.outboxBucket .Values.snapshots.bucket -}}
{{- fail "exports.outboxBucket must differ from snapshots.bucket: the hub's download key reads the outbox bucket, and must never reach a snapshot" -}}
{{- end -}}
{{- if and .Values.exports.download.endpoint (not .Values.exports.download.readerSecret) (not .Values.s3.bundled.enabled) -}}
{{- fail "exports.download.endpoint needs exports.download.readerSecret: a Secret with a key that reads the outbox bucket only (docs/install.md)" -}}
{{- end -}}
{{- end -}}
