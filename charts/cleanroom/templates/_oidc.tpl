{{/*
Sign-in through hub.oidc's OpenID Connect provider (cleanroom.oidc.settings): the environment, volume mount and
volume of one relying party, the hub or the officers' audit page. Called with
(dict "root" $ "prefix" "HUB" "clientId" ... "clientSecret" {secretName, key} "allowedGroups" [...] "callback" URL).
*/}}
{{- define "cleanroom.oidc.env" -}}
{{- $o := .root.Values.hub.oidc -}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_ISSUER, value: {{ $o.issuer | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_CLIENT_ID, value: {{ required "hub.oidc: the client id is required" .clientId | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_CLIENT_SECRET_FILE, value: /etc/cleanroom/oidc/client-secret}
- {name: CLEANROOM_{{ .prefix }}_OIDC_SCOPES, value: {{ join " " $o.scopes | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_USERNAME_CLAIM, value: {{ $o.usernameClaim | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_GROUPS_CLAIM, value: {{ $o.groupsClaim | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_ROLES_CLAIM, value: {{ $o.rolesClaim | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_ALLOWED_GROUPS, value: {{ join "," .allowedGroups | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_MFA_ACR, value: {{ join "," $o.mfa.acr | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_MFA_AMR, value: {{ join "," $o.mfa.amr | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_LOGIN_SERVICE, value: {{ $o.loginService | quote }}}
- {name: CLEANROOM_{{ .prefix }}_OIDC_USERINFO, value: {{ $o.userinfo | toString | quote }}}
{{- with .callback }}
- {name: CLEANROOM_{{ $.prefix }}_OIDC_CALLBACK_URL, value: {{ . | quote }}}
{{- end }}
{{- end -}}

{{- define "cleanroom.oidc.mount" -}}
- {name: oidc-client, mountPath: /etc/cleanroom/oidc, readOnly: true}
{{- end -}}

{{- define "cleanroom.oidc.volume" -}}
- name: oidc-client
  secret:
    secretName: {{ required "hub.oidc: clientSecret.secretName (a Secret with the client's secret) is required" .clientSecret.secretName }}
    defaultMode: 0400
    items: [{key: {{ .clientSecret.key | quote }}, path: client-secret}]
{{- end -}}
