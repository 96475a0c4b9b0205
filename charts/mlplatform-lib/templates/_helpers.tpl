{{/*
Standard helpers (after bitnami/common and the prometheus-community charts).
Every template takes the service chart's root context.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "mlplatform-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name, at most 63 characters (DNS label). */}}
{{- define "mlplatform-lib.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "mlplatform-lib.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image tag: image.tag, defaulting to the chart's appVersion. */}}
{{- define "mlplatform-lib.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- end -}}

{{/* Value of app.kubernetes.io/version: the image tag, made label-safe. */}}
{{- define "mlplatform-lib.version" -}}
{{- include "mlplatform-lib.imageTag" . | replace "+" "_" | replace "@" "_" | replace ":" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: only name and instance, because selectors are immutable. */}}
{{- define "mlplatform-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlplatform-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object this chart renders. */}}
{{- define "mlplatform-lib.labels" -}}
helm.sh/chart: {{ include "mlplatform-lib.chart" . }}
{{ include "mlplatform-lib.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mlplatform-lib.version" . | quote }}
app.kubernetes.io/component: {{ .Values.component }}
app.kubernetes.io/part-of: {{ .Values.partOf }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "mlplatform-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlplatform-lib.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The container image: registry/repository:tag@digest. The GPU variant (gpu.enabled) uses
gpu.image.repository and gpu.image.digest instead of image.repository and image.digest.
*/}}
{{- define "mlplatform-lib.image" -}}
{{- $repo := .Values.image.repository -}}
{{- $digest := .Values.image.digest -}}
{{- if .Values.gpu.enabled -}}
{{- $repo = .Values.gpu.image.repository -}}
{{- $digest = .Values.gpu.image.digest -}}
{{- end -}}
{{- $ref := printf "%s:%s" $repo (include "mlplatform-lib.imageTag" .) -}}
{{- if .Values.image.registry -}}
{{- $ref = printf "%s/%s" .Values.image.registry $ref -}}
{{- end -}}
{{- if $digest -}}
{{- $ref = printf "%s@%s" $ref $digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Model pins as the service reads them: name/version for numbers, name@alias otherwise. */}}
{{- define "mlplatform-lib.modelList" -}}
{{- $refs := list -}}
{{- range $name, $pin := .Values.models -}}
{{- $p := toString $pin -}}
{{- if regexMatch "^[0-9]+$" $p -}}
{{- $refs = append $refs (printf "%s/%s" $name $p) -}}
{{- else -}}
{{- $refs = append $refs (printf "%s@%s" $name $p) -}}
{{- end -}}
{{- end -}}
{{- join "," $refs -}}
{{- end -}}

{{/* Pod selector of another platform service, by its app.kubernetes.io/name. */}}
{{- define "mlplatform-lib.peerSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ . }}
  app.kubernetes.io/part-of: mlplatform
{{- end -}}

{{/* Image pull policy: image.pullPolicy when set; else IfNotPresent for an image pinned by digest
(immutable) and Always for a tag alone (a tag can be pushed again). */}}
{{- define "mlplatform-lib.imagePullPolicy" -}}
{{- $digest := .Values.image.digest -}}
{{- if .Values.gpu.enabled -}}
{{- $digest = .Values.gpu.image.digest -}}
{{- end -}}
{{- .Values.image.pullPolicy | default (ternary "IfNotPresent" "Always" (ne (toString $digest) "")) -}}
{{- end -}}

{{/* Where the projected service-account token for the Vault login is mounted. */}}
{{- define "mlplatform-lib.vaultTokenDir" -}}/var/run/secrets/mlplatform/serviceaccount{{- end -}}

{{/* checkov.io/skipN annotations from scanWaivers (check ID -> reason). A waiver without a
reason fails the render (Checkov splits the annotation at "=", so the reason may not hold one). */}}
{{- define "mlplatform-lib.scanWaivers" -}}
{{- $i := 0 -}}
{{- range $id, $reason := .Values.scanWaivers }}
{{- if or (not $reason) (contains "=" $reason) }}
{{- fail (printf "scanWaivers.%s: give the reason for the waiver (without '=')" $id) }}
{{- end }}
{{- $i = add1 $i }}
checkov.io/skip{{ $i }}: {{ printf "%s=%s" $id $reason | quote }}
{{- end }}
{{- end -}}
