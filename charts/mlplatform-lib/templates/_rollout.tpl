{{/*
Argo Rollouts canary (rollout.enabled): a Rollout replaces the Deployment, and an
AnalysisTemplate checks the canary pods' 5xx rate and p99 latency in Prometheus, using
mlplatform_http_requests_total and mlplatform_http_request_duration_seconds_bucket. Canary
pods are told apart by the rollouts_pod_template_hash label the ServiceMonitor copies.
*/}}
{{- define "mlplatform-lib.rollout" -}}
{{- if .Values.rollout.enabled -}}
{{- $ro := .Values.rollout -}}
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
  {{- with include "mlplatform-lib.scanWaivers" . | trim }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: {{ .Values.revisionHistoryLimit }}
  selector:
    matchLabels:
      {{- include "mlplatform-lib.selectorLabels" . | nindent 6 }}
  template:
    {{- include "mlplatform-lib.podTemplate" . | nindent 4 }}
  strategy:
    canary:
      maxSurge: {{ .Values.updateStrategy.maxSurge }}
      maxUnavailable: {{ .Values.updateStrategy.maxUnavailable }}
      analysis:
        startingStep: 1
        templates:
          - templateName: {{ include "mlplatform-lib.fullname" . }}-canary
        args:
          - name: canary-hash
            valueFrom:
              podTemplateHashValue: Latest
      steps:
        {{- range $ro.weights }}
        - setWeight: {{ . }}
        - pause:
            duration: {{ $ro.pauseDuration }}
        {{- end }}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}-canary
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
spec:
  args:
    - name: canary-hash
  metrics:
    - name: error-rate
      interval: {{ $ro.analysis.interval }}
      count: {{ $ro.analysis.count }}
      failureLimit: {{ $ro.analysis.failureLimit }}
      successCondition: "result[0] <= {{ $ro.analysis.maxErrorRate }}"
      provider:
        prometheus:
          address: {{ $ro.analysis.prometheusAddress | quote }}
          query: |
            (
              sum(rate(mlplatform_http_requests_total{namespace="{{ .Release.Namespace }}", service="{{ .Values.component }}", rollouts_pod_template_hash="{{ "{{" }}args.canary-hash{{ "}}" }}", code=~"5.."}[{{ $ro.analysis.window }}]))
              or vector(0)
            )
            /
            clamp_min(sum(rate(mlplatform_http_requests_total{namespace="{{ .Release.Namespace }}", service="{{ .Values.component }}", rollouts_pod_template_hash="{{ "{{" }}args.canary-hash{{ "}}" }}"}[{{ $ro.analysis.window }}])), 1e-9)
    - name: p99-latency
      interval: {{ $ro.analysis.interval }}
      count: {{ $ro.analysis.count }}
      failureLimit: {{ $ro.analysis.failureLimit }}
      successCondition: "isNaN(result[0]) || result[0] <= {{ $ro.analysis.maxP99LatencySeconds }}"
      provider:
        prometheus:
          address: {{ $ro.analysis.prometheusAddress | quote }}
          query: |
            histogram_quantile(0.99, sum by (le) (rate(mlplatform_http_request_duration_seconds_bucket{namespace="{{ .Release.Namespace }}", service="{{ .Values.component }}", rollouts_pod_template_hash="{{ "{{" }}args.canary-hash{{ "}}" }}"}[{{ $ro.analysis.window }}])))
{{- end -}}
{{- end -}}
