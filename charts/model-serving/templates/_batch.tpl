{{/*
Batch scoring as a CronJob (batchScore.enabled): `mlplatform batch-score` on a schedule, one run at a
time. The entity file is read from, and the scores are written to, the PersistentVolumeClaim
batchScore.existingClaim; history features come point-in-time from the feature store's PostgreSQL
offline store (FEATURES_DATABASE_URL from batchScore.featureDatabase, a secretKeyRef); the model
from MLflow (the service's ConfigMap); the scored rows go to drift detection as source "batch"
(BATCH_DRIFT_URL = env.SERVING_DRIFT_URL). Its own NetworkPolicy: nothing in; DNS, the backends in
batchScore.egress and drift-detection out.

Off by default and in every overlay: dev keeps the feature store's offline store in local parquet
inside the feature-store pod (no shared offline store a job could read) and has no volume of entity
files; an environment that has both turns it on in its values.
*/}}

{{- define "model-serving.batchName" -}}
{{- printf "%s-batch-score" (include "mlplatform-lib.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* app.kubernetes.io/name stays the service's (drift-detection admits model-serving pods); the
instance differs, so the Service, the PDB and the service's NetworkPolicy never select a batch pod. */}}
{{- define "model-serving.batchSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mlplatform-lib.name" . }}
app.kubernetes.io/instance: {{ printf "%s-batch-score" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "model-serving.batchLabels" -}}
helm.sh/chart: {{ include "mlplatform-lib.chart" . }}
{{ include "model-serving.batchSelectorLabels" . }}
app.kubernetes.io/version: {{ include "mlplatform-lib.version" . | quote }}
app.kubernetes.io/component: batch-score
app.kubernetes.io/part-of: {{ .Values.partOf }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "model-serving.batchObjects" -}}
{{- if .Values.batchScore.enabled -}}
{{- $b := .Values.batchScore -}}
{{- $name := include "model-serving.batchName" . -}}
{{- if ne .Values.secrets.backend "env" -}}
{{- fail "batchScore.enabled needs secrets.backend env (FEATURES_DATABASE_URL from batchScore.featureDatabase.existingSecret); no Vault identity exists for batch scoring yet" -}}
{{- end -}}
{{- $claim := required "batchScore.existingClaim is required with batchScore.enabled (the volume holding the entity files and the scores)" $b.existingClaim -}}
{{- $secret := required "batchScore.featureDatabase.existingSecret is required with batchScore.enabled (the feature store's offline store)" $b.featureDatabase.existingSecret -}}
{{- if and $b.version $b.alias -}}
{{- fail "batchScore: set version or alias, not both" -}}
{{- end -}}
{{- $args := list "batch-score" "--model" $b.model "--entities" (printf "%s/%s" $b.mountPath $b.entities) "--out" (printf "%s/%s" $b.mountPath $b.out) -}}
{{- if $b.version }}{{ $args = concat $args (list "--version" (toString $b.version)) }}{{ else }}{{ $args = concat $args (list "--alias" $b.alias) }}{{ end -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $name }}
  labels:
    {{- include "model-serving.batchLabels" . | nindent 4 }}
spec:
  schedule: {{ $b.schedule | quote }}
  timeZone: Etc/UTC
  # one run at a time: a run still going when the next is due makes that one skip
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ $b.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $b.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $b.failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "model-serving.batchLabels" . | nindent 8 }}
    spec:
      backoffLimit: {{ $b.backoffLimit }}
      activeDeadlineSeconds: {{ $b.activeDeadlineSeconds }}
      ttlSecondsAfterFinished: {{ $b.ttlSecondsAfterFinished }}
      template:
        metadata:
          labels:
            {{- include "model-serving.batchLabels" . | nindent 12 }}
        spec:
          restartPolicy: Never
          serviceAccountName: {{ include "mlplatform-lib.serviceAccountName" . }}
          automountServiceAccountToken: false
          enableServiceLinks: false
          {{- with .Values.priorityClassName }}
          priorityClassName: {{ . }}
          {{- end }}
          {{- with .Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml .Values.podSecurityContext | nindent 12 }}
          containers:
            - name: batch-score
              image: {{ include "mlplatform-lib.image" . | quote }}
              imagePullPolicy: {{ .Values.image.pullPolicy | default "IfNotPresent" }}
              args: {{ toJson $args }}
              envFrom:
                - configMapRef:
                    name: {{ include "mlplatform-lib.fullname" . }}
              env:
                - name: FEATURES_DATABASE_URL
                  valueFrom:
                    secretKeyRef:
                      name: {{ $secret }}
                      key: {{ $b.featureDatabase.key }}
                {{- if and $b.logToDrift (index .Values.env "SERVING_DRIFT_URL") }}
                - name: BATCH_DRIFT_URL
                  value: {{ index .Values.env "SERVING_DRIFT_URL" | quote }}
                {{- end }}
                {{- with .Values.extraEnv }}
                {{- toYaml . | nindent 16 }}
                {{- end }}
              resources:
                {{- toYaml $b.resources | nindent 16 }}
              securityContext:
                {{- toYaml .Values.securityContext | nindent 16 }}
              volumeMounts:
                - name: data
                  mountPath: {{ .Values.dataDir.mountPath }}
                - name: tmp
                  mountPath: /tmp
                - name: batch
                  mountPath: {{ $b.mountPath }}
          volumes:
            - name: data
              emptyDir:
                sizeLimit: {{ $b.dataSizeLimit }}
            - name: tmp
              emptyDir:
                sizeLimit: {{ $b.tmpSizeLimit }}
            - name: batch
              persistentVolumeClaim:
                claimName: {{ $claim }}
          {{- with .Values.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
{{- if .Values.networkPolicy.enabled }}
---
# The batch scoring pods: nothing in; DNS, drift-detection and the backends in batchScore.egress out.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  labels:
    {{- include "model-serving.batchLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "model-serving.batchSelectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  egress:
    - to:
        - namespaceSelector:
            {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 12 }}
          podSelector:
            {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 12 }}
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- range .Values.networkPolicy.allowTo }}
    {{- if eq .name "drift-detection" }}
    # Platform peer: {{ .name }} (the scored rows, source batch).
    - to:
        - podSelector:
            {{- include "mlplatform-lib.peerSelector" .name | nindent 12 }}
      ports:
        - port: {{ .port }}
          protocol: TCP
    {{- end }}
    {{- end }}
    {{- range $key := $b.egress }}
    {{- $dest := required (printf "batchScore.egress: %s is not a key of networkPolicy.egress" $key) (index $.Values.networkPolicy.egress $key) }}
    # Backend: {{ $key }}.
    - to:
        {{- if $dest.ipBlock }}
        - ipBlock:
            {{- toYaml $dest.ipBlock | nindent 12 }}
        {{- else }}
        - namespaceSelector:
            {{- toYaml $dest.namespaceSelector | nindent 12 }}
          podSelector:
            {{- toYaml $dest.podSelector | nindent 12 }}
        {{- end }}
      ports:
        {{- range $dest.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
{{- end }}
{{- end -}}
{{- end -}}
