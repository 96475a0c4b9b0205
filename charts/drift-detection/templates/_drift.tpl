{{/*
What only drift-detection renders on top of the shared service templates (mlplatform-lib.all):

* its PostgreSQL DSN: with the `env` secrets backend DRIFT_DATABASE_URL comes from
  database.existingSecret / database.key (a secretKeyRef, never a ConfigMap); with `vault` the
  chart sets nothing and the service reads the key DRIFT_DATABASE_URL of its Vault KV secret;
* retraining as Kubernetes Jobs (retrain.enabled): the Job template as a ConfigMap mounted into
  the pod (DRIFT_RETRAIN_JOB_TEMPLATE), DRIFT_RETRAIN_MODE=kubernetes, DRIFT_RETRAIN_NAMESPACE
  from the downward API, the service's API token mounted, a Role that may only create (and
  get/list/watch) Jobs in the release namespace, its RoleBinding, and the Job pods' own
  ServiceAccount (no token) and NetworkPolicy. With the `vault` secrets backend the Job logs in to
  Vault as its own identity (role mlplatform-<env>-retrain, secret mlplatform/<env>/retrain, bound
  to that ServiceAccount by scripts/vault-bootstrap.sh) with a short-lived projected token, and
  its NetworkPolicy lets it reach Vault.

The library has no hook for extra volumes, so "drift-detection.deployment" adds the template
volume to the library's Deployment; a library hook would need a new version of all four charts.
*/}}

{{- define "drift-detection.retrainName" -}}
{{- printf "%s-retrain" (include "mlplatform-lib.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drift-detection.retrainTemplateDir" -}}/etc/mlplatform/retrain{{- end -}}

{{/* Where the Job's projected service-account token (its Vault login) is mounted. */}}
{{- define "drift-detection.retrainTokenDir" -}}/var/run/secrets/mlplatform/serviceaccount{{- end -}}

{{/* Labels of the retraining Job and its pods: not the service's selector labels (name differs),
so the Service, PDB and the service's NetworkPolicy never select a training pod; managed by the
service that creates the Jobs, not by Helm or Argo CD. */}}
{{- define "drift-detection.retrainSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-retrain" (include "mlplatform-lib.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drift-detection.retrainLabels" -}}
helm.sh/chart: {{ include "mlplatform-lib.chart" . }}
{{ include "drift-detection.retrainSelectorLabels" . }}
app.kubernetes.io/version: {{ include "mlplatform-lib.version" . | quote }}
app.kubernetes.io/component: retrain
app.kubernetes.io/part-of: {{ .Values.partOf }}
app.kubernetes.io/managed-by: {{ include "mlplatform-lib.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Values the shared templates read, completed before they render: the ConfigMap environment
(DRIFT_RETRAIN_*; inside checksum/config), the secret and downward-API env, the token mount.
*/}}
{{- define "drift-detection.prepareValues" -}}
{{- $v := .Values -}}
{{- $env := deepCopy (default dict $v.env) -}}
{{- $extra := list -}}
{{- $_ := set $env "DRIFT_DATABASE_REQUIRED" (ternary "true" "false" $v.database.required) -}}
{{- if $v.database.existingSecret -}}
{{- if ne $v.secrets.backend "env" -}}
{{- fail "database.existingSecret is for secrets.backend env; with vault the DSN is the key DRIFT_DATABASE_URL of the Vault KV secret mlplatform/<env>/drift-detection" -}}
{{- end -}}
{{- $ref := dict "name" $v.database.existingSecret "key" $v.database.key -}}
{{- $extra = append $extra (dict "name" "DRIFT_DATABASE_URL" "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- end -}}
{{- if $v.retrain.enabled -}}
{{- $_ := set $env "DRIFT_RETRAIN_MODE" "kubernetes" -}}
{{- $_ := set $env "DRIFT_RETRAIN_JOB_TEMPLATE" (printf "%s/job.yaml" (include "drift-detection.retrainTemplateDir" .)) -}}
{{- $_ := set $env "DRIFT_RETRAIN_IMAGE" (include "mlplatform-lib.image" .) -}}
{{- $ns := dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.namespace") -}}
{{- $extra = append $extra (dict "name" "DRIFT_RETRAIN_NAMESPACE" "valueFrom" $ns) -}}
{{- $_ := set $v.serviceAccount "automountToken" true -}}
{{- $_ := set $v "scanWaivers" (merge (dict "CKV_K8S_38" "drift-detection creates the retraining Jobs through the Kubernetes API (Role drift-detection-retrain: create jobs) with this token") (default dict $v.scanWaivers)) -}}
{{- else -}}
{{- $_ := set $env "DRIFT_RETRAIN_MODE" "off" -}}
{{- end -}}
{{- $_ := set $v "env" $env -}}
{{- $_ := set $v "extraEnv" (concat $extra (default list $v.extraEnv)) -}}
{{- end -}}

{{/* One document of mlplatform-lib.all; the Deployment gets the Job template volume. */}}
{{- define "drift-detection.document" -}}
{{- $root := index . 0 -}}
{{- $doc := trim (index . 1) -}}
{{- if and $root.Values.retrain.enabled (regexMatch "(?m)^kind: Deployment$" $doc) -}}
{{- $obj := fromYaml $doc -}}
{{- $pod := $obj.spec.template.spec -}}
{{- $volume := dict "name" "retrain-job" "configMap" (dict "name" (include "drift-detection.retrainName" $root)) -}}
{{- $_ := set $pod "volumes" (append $pod.volumes $volume) -}}
{{- $container := first $pod.containers -}}
{{- $mount := dict "name" "retrain-job" "mountPath" (include "drift-detection.retrainTemplateDir" $root) "readOnly" true -}}
{{- $_ := set $container "volumeMounts" (append $container.volumeMounts $mount) -}}
{{- $_ := set $obj.spec.template.metadata.annotations "checksum/retrain-job" (include "drift-detection.retrainJob" $root | sha256sum) -}}
{{- toYaml $obj -}}
{{- else -}}
{{- $doc -}}
{{- end -}}
{{- end -}}

{{/* The batch/v1 Job the service creates (mlplatform.drift.retrain.build_job adds the model env). */}}
{{- define "drift-detection.retrainJob" -}}
{{- $r := .Values.retrain -}}
{{- $sc := merge (dict "readOnlyRootFilesystem" true "allowPrivilegeEscalation" false) (deepCopy .Values.securityContext) -}}
{{- $vault := eq .Values.secrets.backend "vault" -}}
{{- $environment := .Values.config.environment -}}
{{- $tokenDir := include "drift-detection.retrainTokenDir" . -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ include "drift-detection.retrainName" . }}-
  labels:
    {{- include "drift-detection.retrainLabels" . | nindent 4 }}
spec:
  backoffLimit: {{ $r.backoffLimit }}
  activeDeadlineSeconds: {{ $r.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ $r.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "drift-detection.retrainLabels" . | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "drift-detection.retrainName" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: retrain
          image: {{ include "mlplatform-lib.image" . | quote }}
          imagePullPolicy: {{ include "mlplatform-lib.imagePullPolicy" . }}
          command: {{ toJson $r.command }}
          env:
            - name: MLPLATFORM_ENV
              value: {{ .Values.config.environment | quote }}
            - name: MLPLATFORM_DATA_DIR
              value: {{ .Values.dataDir.mountPath | quote }}
            {{- with .Values.config.mlflowTrackingUri }}
            - name: MLFLOW_TRACKING_URI
              value: {{ . | quote }}
            {{- end }}
            - name: MLPLATFORM_RETRAIN_PROMOTE
              value: {{ $r.promote | quote }}
            - name: MLPLATFORM_RETRAIN_MARGIN
              value: {{ $r.margin | toString | quote }}
            - name: MLPLATFORM_RETRAIN_ENV
              value: {{ .Values.config.environment | quote }}
            - name: HOME
              value: /tmp
            - name: XDG_CACHE_HOME
              value: /tmp/.cache
            - name: MPLCONFIGDIR
              value: /tmp/.cache/matplotlib
            {{- if $vault }}
            # The run's secrets (FEATURES_DATABASE_URL, MLflow credentials) from the Job's own Vault
            # secret, logged in to with the short-lived projected token below.
            - name: MLPLATFORM_SECRETS_BACKEND
              value: vault
            - name: VAULT_ADDR
              value: {{ required "secrets.vault.addr is required when secrets.backend is vault" .Values.secrets.vault.addr | quote }}
            - name: VAULT_ROLE
              value: {{ default (printf "mlplatform-%s-retrain" $environment) $r.vault.role | quote }}
            - name: VAULT_SECRET_PATH
              value: {{ printf "mlplatform/%s/retrain" $environment | quote }}
            {{- with .Values.secrets.vault.authPath }}
            - name: VAULT_AUTH_PATH
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.secrets.vault.kvMount }}
            - name: VAULT_KV_MOUNT
              value: {{ . | quote }}
            {{- end }}
            - name: VAULT_SA_TOKEN_PATH
              value: {{ printf "%s/token" $tokenDir | quote }}
            {{- end }}
            {{- range $k, $val := $r.env }}
            - name: {{ $k }}
              value: {{ $val | toString | quote }}
            {{- end }}
            {{- with $r.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          resources:
            {{- toYaml $r.resources | nindent 12 }}
          securityContext:
            {{- toYaml $sc | nindent 12 }}
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
            sizeLimit: {{ $r.dataSizeLimit }}
        - name: tmp
          emptyDir:
            sizeLimit: {{ $r.tmpSizeLimit }}
        {{- if $vault }}
        - name: vault-token
          projected:
            sources:
              - serviceAccountToken:
                  path: token
                  expirationSeconds: 3600
        {{- end }}
{{- end -}}

{{- define "drift-detection.retrainObjects" -}}
{{- if .Values.retrain.enabled -}}
{{- $name := include "drift-detection.retrainName" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
data:
  job.yaml: |
    {{- include "drift-detection.retrainJob" . | nindent 4 }}
---
# The training pods' identity: no API token, no RBAC.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
automountServiceAccountToken: false
---
# What the launcher (mlplatform.drift.retrain) does: create one Job per trigger, in this namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
rules:
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["create", "get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "mlplatform-lib.serviceAccountName" . }}
    namespace: {{ .Release.Namespace }}
{{- if .Values.networkPolicy.enabled }}
---
# The training pods: nothing in; DNS and the backends in retrain.egress (and Vault with the vault
# secrets backend) out.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "drift-detection.retrainSelectorLabels" . | nindent 6 }}
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
    {{- $keys := default list .Values.retrain.egress -}}
    {{- if eq .Values.secrets.backend "vault" }}{{ $keys = append $keys "vault" | uniq }}{{ end }}
    {{- range $key := $keys }}
    {{- $dest := required (printf "retrain.egress: %s is not a key of networkPolicy.egress" $key) (index $.Values.networkPolicy.egress $key) }}
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
