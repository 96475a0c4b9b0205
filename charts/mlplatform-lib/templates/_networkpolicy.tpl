{{/*
NetworkPolicy: the namespace denies everything by default (kubernetes/base); this opens exactly
the flows the service needs: its callers in, Prometheus to /metrics, DNS, the platform peers it
calls, and the shared backends (MLflow, OTLP collector, Vault, Redis) that are switched on.
*/}}
{{- define "mlplatform-lib.networkpolicy" -}}
{{- if .Values.networkPolicy.enabled -}}
{{- $np := .Values.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "mlplatform-lib.fullname" . }}
  labels:
    {{- include "mlplatform-lib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "mlplatform-lib.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  ingress:
    # Prometheus scrapes /metrics.
    - from:
        - namespaceSelector:
            {{- toYaml $np.prometheus.namespaceSelector | nindent 12 }}
          podSelector:
            {{- toYaml $np.prometheus.podSelector | nindent 12 }}
      ports:
        - port: http
          protocol: TCP
    {{- if $np.ingressController.enabled }}
    # The ingress controller forwards the client API.
    - from:
        - namespaceSelector:
            {{- toYaml $np.ingressController.namespaceSelector | nindent 12 }}
          podSelector:
            {{- toYaml $np.ingressController.podSelector | nindent 12 }}
      ports:
        - port: http
          protocol: TCP
        {{- range $.Values.extraPorts }}
        - port: {{ .name }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- with $np.allowFrom }}
    # Platform services that call this one.
    - from:
        {{- range . }}
        - podSelector:
            {{- include "mlplatform-lib.peerSelector" . | nindent 12 }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
        {{- range $.Values.extraPorts }}
        - port: {{ .name }}
          protocol: TCP
        {{- end }}
    {{- end }}
  egress:
    # DNS.
    - to:
        - namespaceSelector:
            {{- toYaml $np.dns.namespaceSelector | nindent 12 }}
          podSelector:
            {{- toYaml $np.dns.podSelector | nindent 12 }}
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- range $np.allowTo }}
    # Platform peer: {{ .name }}.
    - to:
        - podSelector:
            {{- include "mlplatform-lib.peerSelector" .name | nindent 12 }}
      ports:
        - port: {{ .port }}
          protocol: TCP
    {{- end }}
    {{- range $name, $dest := $np.egress }}
    {{- if or $dest.enabled (and (eq $name "vault") (eq $.Values.secrets.backend "vault")) }}
    # Backend: {{ $name }}.
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
