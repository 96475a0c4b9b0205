{{/*
Everything a service chart renders. A service chart's only template is:
  {{ include "mlplatform-lib.all" . }}
*/}}
{{- define "mlplatform-lib.all" -}}
{{- $docs := list
  (include "mlplatform-lib.serviceaccount" .)
  (include "mlplatform-lib.configmap" .)
  (include "mlplatform-lib.service" .)
  (include "mlplatform-lib.deployment" .)
  (include "mlplatform-lib.rollout" .)
  (include "mlplatform-lib.hpa" .)
  (include "mlplatform-lib.pdb" .)
  (include "mlplatform-lib.networkpolicy" .)
  (include "mlplatform-lib.ingress" .)
  (include "mlplatform-lib.servicemonitor" .)
  (include "mlplatform-lib.prometheusrule" .)
-}}
{{- range $docs }}
{{- if trim . }}
---
{{ trim . }}
{{- end }}
{{- end }}
{{- end -}}
