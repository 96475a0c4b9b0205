{{/*
V2 over gRPC (inference.GRPCInferenceService, grpc.enabled): the server listens on grpc.port in the
same container as REST (SERVING_GRPC_PORT). all.yaml puts the port into the ConfigMap and, through the
library's extraPorts, declares the container port `grpc`, adds port `grpc` (appProtocol grpc: HTTP/2-
aware meshes and L7 load balancers balance per call, not per connection) to the Service and lets the
same callers as `http` reach it in the NetworkPolicy (Prometheus scrapes HTTP only).

The Ingress here (ingress.enabled and grpc.ingress.enabled) routes /inference.GRPCInferenceService/ on
the REST Ingress's host to port `grpc` with nginx `backend-protocol: GRPC` (HTTP/2 to the pod), with
the same TLS secret, body limit, rate limits and read timeout. cert-manager issues the certificate once,
for the REST Ingress (two Ingresses asking for one Secret would fight).
*/}}

{{- define "model-serving.grpcIngress" -}}
{{- if .Values.grpc.enabled -}}
{{- $in := .Values.ingress }}
{{- if and $in.enabled .Values.grpc.ingress.enabled }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ printf "%s-grpc" (include "mlplatform-lib.fullname" .) | trunc 63 | trimSuffix "-" }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
  annotations:
    nginx.ingress.kubernetes.io/backend-protocol: "GRPC"
    nginx.ingress.kubernetes.io/ssl-redirect: "true"
    nginx.ingress.kubernetes.io/force-ssl-redirect: "true"
    nginx.ingress.kubernetes.io/proxy-body-size: {{ $in.maxBodySize | quote }}
    nginx.ingress.kubernetes.io/limit-rps: {{ $in.rateLimit.rps | quote }}
    nginx.ingress.kubernetes.io/limit-burst-multiplier: {{ $in.rateLimit.burstMultiplier | quote }}
    nginx.ingress.kubernetes.io/limit-connections: {{ $in.rateLimit.connections | quote }}
    nginx.ingress.kubernetes.io/proxy-read-timeout: {{ $in.proxyReadTimeoutSeconds | quote }}
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
          - path: /inference.GRPCInferenceService/
            pathType: Prefix
            backend:
              service:
                name: {{ include "mlplatform-lib.fullname" . }}
                port:
                  name: grpc
{{- end }}
{{- end }}
{{- end -}}
