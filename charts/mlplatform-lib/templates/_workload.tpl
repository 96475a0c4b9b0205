{{/* Container resources; with gpu.enabled the GPU count is added to requests and limits. */}}
{{- define "mlplatform-lib.resources" -}}
{{- $res := deepCopy .Values.resources -}}
{{- if .Values.gpu.enabled -}}
{{- $req := default dict $res.requests -}}
{{- $lim := default dict $res.limits -}}
{{- $_ := set $req .Values.gpu.resourceName (.Values.gpu.count | toString) -}}
{{- $_ := set $lim .Values.gpu.resourceName (.Values.gpu.count | toString) -}}
{{- $_ := set $res "requests" $req -}}
{{- $_ := set $res "limits" $lim -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The pod template shared by the Deployment and the Argo Rollout. */}}
{{- define "mlplatform-lib.podTemplate" -}}
metadata:
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "mlplatform-lib.configmap" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "mlplatform-lib.serviceAccountName" . }}
  # the API token only where the service calls the API; the Vault login uses the projected token below
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .Values.component }}
      image: {{ include "mlplatform-lib.image" . | quote }}
      imagePullPolicy: {{ include "mlplatform-lib.imagePullPolicy" . }}
      args: ["serve", {{ .Values.component | quote }}, "--port", {{ .Values.port | quote }}]
      ports:
        - name: http
          containerPort: {{ .Values.port }}
          protocol: TCP
        {{- range .Values.extraPorts }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "mlplatform-lib.fullname" . }}
      {{- if or .Values.secrets.apiKeysSecretName .Values.extraEnv (eq .Values.secrets.backend "vault") }}
      env:
        {{- if eq .Values.secrets.backend "vault" }}
        # Vault login with a short-lived projected token, not the API token
        - name: VAULT_SA_TOKEN_PATH
          value: {{ printf "%s/token" (include "mlplatform-lib.vaultTokenDir" .) | quote }}
        {{- end }}
        {{- with .Values.secrets.apiKeysSecretName }}
        - name: MLPLATFORM_API_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: MLPLATFORM_API_KEYS
              optional: true
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      startupProbe:
        httpGet:
          path: /v2/health/live
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /v2/health/live
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /v2/health/ready
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      resources:
        {{- include "mlplatform-lib.resources" . | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ .Values.dataDir.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- if eq .Values.secrets.backend "vault" }}
        - name: vault-token
          mountPath: {{ include "mlplatform-lib.vaultTokenDir" . }}
          readOnly: true
        {{- end }}
  volumes:
    - name: data
      emptyDir:
        sizeLimit: {{ .Values.dataDir.sizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpDir.sizeLimit }}
    {{- if eq .Values.secrets.backend "vault" }}
    - name: vault-token
      projected:
        sources:
          - serviceAccountToken:
              path: token
              expirationSeconds: 3600
    {{- end }}
  {{- $nodeSelector := .Values.nodeSelector -}}
  {{- $tolerations := .Values.tolerations -}}
  {{- if .Values.gpu.enabled -}}
  {{- $nodeSelector = merge (deepCopy .Values.gpu.nodeSelector) .Values.nodeSelector -}}
  {{- $tolerations = concat .Values.tolerations .Values.gpu.tolerations -}}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range .Values.topologySpread.topologyKeys }}
    - maxSkew: {{ $.Values.topologySpread.maxSkew }}
      topologyKey: {{ . }}
      whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "mlplatform-lib.selectorLabels" $ | nindent 10 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{- define "mlplatform-lib.deployment" -}}
{{- if not .Values.rollout.enabled -}}
apiVersion: apps/v1
kind: Deployment
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
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ .Values.updateStrategy.maxSurge }}
      maxUnavailable: {{ .Values.updateStrategy.maxUnavailable }}
  template:
    {{- include "mlplatform-lib.podTemplate" . | nindent 4 }}
{{- end -}}
{{- end -}}
