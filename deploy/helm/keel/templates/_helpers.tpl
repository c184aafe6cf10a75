{{- define "keel.fullname" -}}{{ .Release.Name }}-keel{{- end -}}
{{- define "keel.labels" -}}
app.kubernetes.io/name: keel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "keel.secretName" -}}{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "keel.fullname" .)) }}{{- end -}}
{{- define "keel.databaseSecretName" -}}{{ .Values.database.existingSecret | default (printf "%s-database" (include "keel.fullname" .)) }}{{- end -}}
{{/* The environment every Keel container gets: secrets from Secrets, keel.yaml from the ConfigMap. */}}
{{- define "keel.env" -}}
- name: KEEL_CONFIG
  value: /etc/keel/keel.yaml
- name: KEEL_DATABASE_TLS
  value: {{ .Values.database.tls | quote }}
- name: KEEL_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "keel.databaseSecretName" . }}, key: KEEL_DATABASE_URL}}
- name: KEEL_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "keel.secretName" . }}, key: KEEL_SECRET_KEY}}
- name: KEEL_ADMIN_EMAIL
  valueFrom: {secretKeyRef: {name: {{ include "keel.secretName" . }}, key: KEEL_ADMIN_EMAIL}}
- name: KEEL_ADMIN_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "keel.secretName" . }}, key: KEEL_ADMIN_PASSWORD}}
{{- end -}}
