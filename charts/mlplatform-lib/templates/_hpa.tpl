{{/*
HorizontalPodAutoscaler (autoscaling/v2): CPU utilisation plus per-pod custom metrics served by
prometheus-adapter (rules in observability/prometheus-adapter/rules.yaml), and GPU utilisation
(DCGM_FI_DEV_GPU_UTIL) when the GPU variant is on.
*/}}
{{- define "mlplatform-lib.hpa" -}}
{{- if .Values.autoscaling.enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    {{- if .Values.rollout.enabled }}
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    {{- else }}
    apiVersion: apps/v1
    kind: Deployment
    {{- end }}
    name: {{ include "mlplatform-lib.fullname" . }}
  minReplicas: {{ .Values.autoscaling.minReplicas }}
  maxReplicas: {{ .Values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .Values.autoscaling.targetCPUUtilizationPercentage }}
    {{- range .Values.autoscaling.podMetrics }}
    - type: Pods
      pods:
        metric:
          name: {{ .name }}
        target:
          type: AverageValue
          averageValue: {{ .targetAverageValue | quote }}
    {{- end }}
    {{- if and .Values.gpu.enabled .Values.autoscaling.gpu.enabled }}
    - type: Pods
      pods:
        metric:
          name: {{ .Values.autoscaling.gpu.metricName }}
        target:
          type: AverageValue
          averageValue: {{ .Values.autoscaling.gpu.targetAverageUtilization | quote }}
    {{- end }}
  behavior:
    {{- toYaml .Values.autoscaling.behavior | nindent 4 }}
{{- end -}}
{{- end -}}
