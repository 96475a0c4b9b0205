{{/*
What only feature-store renders on top of the shared service templates (mlplatform-lib.all):

* its database (database.enabled): the Feast SQL registry and the PostgreSQL offline store, shared
  by every replica and the materialisation CronJob. With the `env` secrets backend
  FEATURES_DATABASE_URL comes from database.existingSecret / database.key (a secretKeyRef, never
  the ConfigMap); with `vault` the chart sets nothing and the service reads the key
  FEATURES_DATABASE_URL of its Vault KV secret. FEATURES_DATABASE_REQUIRED=true either way, so a
  pod without the URL stops instead of starting with a registry of its own.
* materialisation as a CronJob (materialize.enabled): `mlplatform materialize` (incremental, up to
  now) on a schedule, one run at a time, with the service's ConfigMap and secrets, and its own
  NetworkPolicy (nothing in; DNS and the backends in materialize.egress out).
*/}}

{{- define "feature-store.materializeName" -}}
{{- printf "%s-materialize" (include "mlplatform-lib.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the materialisation pods. app.kubernetes.io/name stays the service's (the
database's NetworkPolicy admits pods by it), the instance differs, so the Service, the PDB and the
service's NetworkPolicy (name + instance) never select a materialisation pod. */}}
{{- define "feature-store.materializeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mlplatform-lib.name" . }}
app.kubernetes.io/instance: {{ printf "%s-materialize" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "feature-store.materializeLabels" -}}
helm.sh/chart: {{ include "mlplatform-lib.chart" . }}
{{ include "feature-store.materializeSelectorLabels" . }}
app.kubernetes.io/version: {{ include "mlplatform-lib.version" . | quote }}
app.kubernetes.io/component: materialize
app.kubernetes.io/part-of: {{ .Values.partOf }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Values the shared templates read, completed before they render: FEATURES_DATABASE_REQUIRED in the
ConfigMap environment (inside checksum/config) and the database URL's secretKeyRef in extraEnv.
*/}}
{{- define "feature-store.prepareValues" -}}
{{- $v := .Values -}}
{{- $db := $v.database -}}
{{- if and $db.existingSecret (ne $v.secrets.backend "env") -}}
{{- fail "database.existingSecret is for secrets.backend env; with vault the URL is the key FEATURES_DATABASE_URL of the Vault KV secret mlplatform/<env>/feature-store" -}}
{{- end -}}
{{- if $db.enabled -}}
{{- $env := deepCopy (default dict $v.env) -}}
{{- $_ := set $env "FEATURES_DATABASE_REQUIRED" "true" -}}
{{- $_ := set $v "env" $env -}}
{{- if eq $v.secrets.backend "env" -}}
{{- $secret := required "database.existingSecret is required with database.enabled and secrets.backend env (dev/staging: mlplatform-pg-app)" $db.existingSecret -}}
{{- $ref := dict "name" $secret "key" $db.key -}}
{{- $url := dict "name" "FEATURES_DATABASE_URL" "valueFrom" (dict "secretKeyRef" $ref) -}}
{{- $_ := set $v "extraEnv" (prepend (default list $v.extraEnv) $url) -}}
{{- end -}}
{{- else if $db.existingSecret -}}
{{- fail "database.existingSecret is set but database.enabled is false" -}}
{{- end -}}
{{- if $v.materialize.enabled -}}
{{- if not $db.enabled -}}
{{- fail "materialize.enabled needs database.enabled: the job reads the shared registry and offline store" -}}
{{- end -}}
{{- if eq (toString (default "sqlite" (index $v.env "FEATURES_ONLINE_STORE"))) "sqlite" -}}
{{- fail "materialize.enabled needs a shared online store (env.FEATURES_ONLINE_STORE: redis): with SQLite the job would fill only its own file" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "feature-store.materializeObjects" -}}
{{- if .Values.materialize.enabled -}}
{{- $m := .Values.materialize -}}
{{- $name := include "feature-store.materializeName" . -}}
{{- $vault := eq .Values.secrets.backend "vault" -}}
{{- $tokenDir := "/var/run/secrets/mlplatform/serviceaccount" -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $name }}
  labels:
    {{- include "feature-store.materializeLabels" . | nindent 4 }}
  {{- with include "mlplatform-lib.scanWaivers" . | trim }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  schedule: {{ $m.schedule | quote }}
  timeZone: Etc/UTC
  # one run at a time: a run still going when the next is due makes that one skip
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ $m.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $m.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $m.failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "feature-store.materializeLabels" . | nindent 8 }}
    spec:
      backoffLimit: {{ $m.backoffLimit }}
      activeDeadlineSeconds: {{ $m.activeDeadlineSeconds }}
      ttlSecondsAfterFinished: {{ $m.ttlSecondsAfterFinished }}
      template:
        metadata:
          labels:
            {{- include "feature-store.materializeLabels" . | nindent 12 }}
        spec:
          restartPolicy: Never
          # the service's identity (the Vault role is bound to it); no API token is mounted
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
            - name: materialize
              image: {{ include "mlplatform-lib.image" . | quote }}
              imagePullPolicy: {{ include "mlplatform-lib.imagePullPolicy" . }}
              args: {{ toJson (concat (list "materialize") $m.args) }}
              envFrom:
                - configMapRef:
                    name: {{ include "mlplatform-lib.fullname" . }}
              {{- if or .Values.extraEnv $vault }}
              env:
                {{- with .Values.extraEnv }}
                {{- toYaml . | nindent 16 }}
                {{- end }}
                {{- if $vault }}
                # Vault login with a short-lived projected token instead of the automounted one
                - name: VAULT_SA_TOKEN_PATH
                  value: {{ printf "%s/token" $tokenDir | quote }}
                {{- end }}
              {{- end }}
              resources:
                {{- toYaml $m.resources | nindent 16 }}
              securityContext:
                {{- toYaml .Values.securityContext | nindent 16 }}
              volumeMounts:
                - name: data
                  mountPath: {{ .Values.dataDir.mountPath }}
                - name: tmp
                  mountPath: /tmp
                {{- if $vault }}
                - name: vault-token
                  mountPath: {{ $tokenDir }}
                  readOnly: true
                {{- end }}
          volumes:
            - name: data
              emptyDir:
                sizeLimit: {{ $m.dataSizeLimit }}
            - name: tmp
              emptyDir:
                sizeLimit: {{ $m.tmpSizeLimit }}
            {{- if $vault }}
            - name: vault-token
              projected:
                sources:
                  - serviceAccountToken:
                      path: token
                      expirationSeconds: 3600
            {{- end }}
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
# The materialisation pods: nothing in; DNS and the backends in materialize.egress out.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  labels:
    {{- include "feature-store.materializeLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "feature-store.materializeSelectorLabels" . | nindent 6 }}
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
    {{- $keys := $m.egress -}}
    {{- if $vault }}{{ $keys = append $keys "vault" | uniq }}{{ end }}
    {{- range $key := $keys }}
    {{- $dest := required (printf "materialize.egress: %s is not a key of networkPolicy.egress" $key) (index $.Values.networkPolicy.egress $key) }}
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
