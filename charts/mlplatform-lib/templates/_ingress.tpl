{{/*
Ingress (ingress-nginx) for the client API: TLS is mandatory, the certificate comes from
cert-manager, body size and per-client rate limits are set by annotations.
*/}}
{{- define "mlplatform-lib.ingress" -}}
{{- if .Values.ingress.enabled -}}
{{- $in := .Values.ingress -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
  annotations:
    cert-manager.io/cluster-issuer: {{ required "ingress.clusterIssuer is required (TLS is mandatory)" $in.clusterIssuer | quote }}
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/ssl-redirect: "true"
    nginx.ingress.kubernetes.io/force-ssl-redirect: "true"
    nginx.ingress.kubernetes.io/proxy-body-size: {{ $in.maxBodySize | quote }}
    nginx.ingress.kubernetes.io/limit-rps: {{ $in.rateLimit.rps | quote }}
    nginx.ingress.kubernetes.io/limit-burst-multiplier: {{ $in.rateLimit.burstMultiplier | quote }}
    nginx.ingress.kubernetes.io/limit-connections: {{ $in.rateLimit.connections | quote }}
    nginx.ingress.kubernetes.io/proxy-read-timeout: {{ $in.proxyReadTimeoutSeconds | quote }}
    {{- with $in.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  ingressClassName: {{ $in.className }}
  tls:
    - hosts:
        - {{ required "ingress.host is required" $in.host | quote }}
      secretName: {{ default (printf "%s-tls" (include "mlplatform-lib.fullname" .)) $in.tlsSecretName }}
  rules:
    - host: {{ $in.host | quote }}
      http:
        paths:
          {{- range $in.paths }}
          - path: {{ . | quote }}
            pathType: ImplementationSpecific
            backend:
              service:
                name: {{ include "mlplatform-lib.fullname" $ }}
                port:
                  name: http
          {{- end }}
{{- end -}}
{{- end -}}
