{{/* Environment of the service container: platform-wide variables plus the service's own. */}}
{{- define "mlplatform-lib.configData" -}}
{{- $p := .Values.envPrefix -}}
MLPLATFORM_ENV: {{ .Values.config.environment | quote }}
MLPLATFORM_DATA_DIR: {{ .Values.dataDir.mountPath | quote }}
{{- with .Values.config.mlflowTrackingUri }}
MLFLOW_TRACKING_URI: {{ . | quote }}
{{- end }}
{{- with .Values.config.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ .Values.component | quote }}
HOME: "/tmp"
XDG_CACHE_HOME: "/tmp/.cache"
MPLCONFIGDIR: "/tmp/.cache/matplotlib"
{{ $p }}LOG_LEVEL: {{ .Values.config.logLevel | quote }}
{{ $p }}AUTH_ENABLED: {{ .Values.config.authEnabled | toString | quote }}
{{ $p }}SECRETS_BACKEND: {{ .Values.secrets.backend | quote }}
{{- if eq .Values.secrets.backend "vault" }}
VAULT_ADDR: {{ required "secrets.vault.addr is required when secrets.backend is vault" .Values.secrets.vault.addr | quote }}
VAULT_ROLE: {{ required "secrets.vault.role is required when secrets.backend is vault" .Values.secrets.vault.role | quote }}
{{- with .Values.secrets.vault.authPath }}
VAULT_AUTH_PATH: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.vault.kvMount }}
VAULT_KV_MOUNT: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.vault.secretPath }}
VAULT_SECRET_PATH: {{ . | quote }}
{{- end }}
{{- end }}
{{- if and .Values.modelsEnv .Values.models }}
{{ $p }}MODELS: {{ include "mlplatform-lib.modelList" . | quote }}
{{- end }}
{{- range $k, $v := .Values.env }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{- define "mlplatform-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
data:
  {{- include "mlplatform-lib.configData" . | nindent 2 }}
{{- end -}}
