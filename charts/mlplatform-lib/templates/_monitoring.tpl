{{- define "mlplatform-lib.servicemonitor" -}}
{{- if .Values.serviceMonitor.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
    {{- with .Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "mlplatform-lib.selectorLabels" . | nindent 6 }}
  # The canary analysis tells canary from stable pods by this label.
  podTargetLabels:
    - rollouts-pod-template-hash
    - app.kubernetes.io/version
  endpoints:
    - port: http
      path: /metrics
      interval: {{ .Values.serviceMonitor.interval }}
      scrapeTimeout: {{ .Values.serviceMonitor.scrapeTimeout }}
{{- end -}}
{{- end -}}

{{/*
PrometheusRule: rule groups loaded with .Files.Get from the chart's files/rules/ copy of
observability/ (kept identical by `make chart-files`; a test fails when they drift apart).
*/}}
{{- define "mlplatform-lib.prometheusrule" -}}
{{- if and .Values.prometheusRule.enabled .Values.prometheusRule.files -}}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
    {{- with .Values.prometheusRule.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- $groups := list }}
  {{- range .Values.prometheusRule.files }}
  {{- $content := $.Files.Get (printf "files/rules/%s" .) }}
  {{- if not $content }}
  {{- fail (printf "prometheusRule.files: files/rules/%s is missing or empty in chart %s" . $.Chart.Name) }}
  {{- end }}
  {{- $groups = concat $groups (fromYaml $content).groups }}
  {{- end }}
  groups:
    {{- toYaml $groups | nindent 4 }}
{{- end -}}
{{- end -}}
