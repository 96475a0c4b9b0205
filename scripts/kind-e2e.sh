#!/usr/bin/env bash
# End-to-end check on a local kind cluster (needs Docker and kind; NOT run in this repository's
# CI or test suite, which have no Docker):
#   1. create a kind cluster with the ingress ports mapped to localhost,
#   2. install ingress-nginx, cert-manager (+ a self-signed ClusterIssuer) and the Prometheus
#      Operator CRDs the charts render (ServiceMonitor, PrometheusRule),
#   3. build the four service images (services/build.sh) and load them into the cluster,
#   4. run an MLflow server with the demo models in namespace mlflow,
#   5. render the dev overlay (scripts/render.py) and apply it,
#   6. smoke-test the client API through the ingress: V2 infer on model-serving and generate on
#      the summarizer (model-serving-text) over TLS.
# Usage: scripts/kind-e2e.sh [--keep]    (--keep leaves the cluster running)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-mlplatform-e2e}"
TAG="${TAG:-0.1.0}"                       # the dev overlay pins image.tag 0.1.0
HOST="api.dev.mlplatform.example.com"     # kubernetes/overlays/dev/values/model-serving.yaml
NS="mlplatform-dev"
INGRESS_NGINX_VERSION="controller-v1.12.1"
CERT_MANAGER_VERSION="v1.17.1"
PROMETHEUS_OPERATOR_VERSION="v0.81.0"
KEEP=0; [[ "${1:-}" == "--keep" ]] && KEEP=1
export PATH="$PWD/.venv/bin:$PATH"       # helm 3.17 and kubectl 1.32 from `make tools`

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "missing $tool (make tools puts helm/kubectl in .venv/bin)"; exit 1; }
done

cleanup() { [[ $KEEP == 1 ]] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

echo "== 1. kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 120s --config - <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: InitConfiguration
        nodeRegistration:
          kubeletExtraArgs:
            node-labels: "ingress-ready=true"
    extraPortMappings:
      - {containerPort: 80, hostPort: 80, protocol: TCP}
      - {containerPort: 443, hostPort: 443, protocol: TCP}
KIND

echo "== 2. ingress-nginx, cert-manager, Prometheus Operator CRDs"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/${INGRESS_NGINX_VERSION}/deploy/static/provider/kind/deploy.yaml"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
for crd in servicemonitors prometheusrules; do
  kubectl apply --server-side -f "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/${PROMETHEUS_OPERATOR_VERSION}/example/prometheus-operator-crd/monitoring.coreos.com_${crd}.yaml"
done
kubectl -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=180s
kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=180s
kubectl apply -f - <<'ISSUER'
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: selfsigned
spec:
  selfSigned: {}
ISSUER

echo "== 3. images $TAG"
services/build.sh "$TAG" model-serving feature-store drift-detection explainability
for svc in model-serving feature-store drift-detection explainability; do
  kind load docker-image --name "$CLUSTER" "ghcr.io/mlplatform/${svc}:${TAG}"
done

echo "== 4. MLflow with the demo models (namespace mlflow)"
kubectl create namespace mlflow --dry-run=client -o yaml | kubectl apply -f -
kubectl -n mlflow apply -f - <<MLFLOW
apiVersion: apps/v1
kind: Deployment
metadata:
  name: mlflow
  labels: {app.kubernetes.io/name: mlflow}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: mlflow}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: mlflow}
    spec:
      containers:
        - name: mlflow
          image: ghcr.io/mlplatform/model-serving:${TAG}
          command: ["sh", "-c"]
          args:
            - >-
              mlflow server --host 0.0.0.0 --port 5000
              --backend-store-uri sqlite:////tmp/mlflow.db --serve-artifacts
              --artifacts-destination /tmp/artifacts & 
              until python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health')"; do sleep 1; done;
              MLFLOW_TRACKING_URI=http://127.0.0.1:5000 mlplatform train --rows 20000 && wait
          ports: [{containerPort: 5000}]
          readinessProbe:
            httpGet: {path: /health, port: 5000}
---
apiVersion: v1
kind: Service
metadata:
  name: mlflow
spec:
  selector: {app.kubernetes.io/name: mlflow}
  ports: [{port: 5000, targetPort: 5000}]
MLFLOW
kubectl -n mlflow rollout status deploy/mlflow --timeout=600s
# Wait until training registered the champion models (tabular and the summarizer).
for _ in $(seq 1 120); do
  if kubectl -n mlflow exec deploy/mlflow -- python -c "import mlflow; mlflow.set_tracking_uri('http://127.0.0.1:5000'); c = mlflow.MlflowClient(); c.get_model_version_by_alias('fraud-detector', 'champion'); c.get_model_version_by_alias('summarizer', 'champion')" 2>/dev/null; then break; fi
  sleep 5
done

echo "== 5. dev overlay"
python scripts/render.py --env dev --out rendered/dev
kubectl apply --server-side -f rendered/dev/namespace-${NS}.yaml
API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
KEY_HASH="$(python -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$API_KEY")"
kubectl -n "$NS" create secret generic mlplatform-api-keys \
  --from-literal=MLPLATFORM_API_KEYS="${KEY_HASH}:infer|explain|features:read|drift:write" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side -f rendered/dev/all.yaml
for svc in feature-store drift-detection model-serving model-serving-text explainability; do
  kubectl -n "$NS" rollout status "deploy/${svc}" --timeout=600s
done

echo "== 6. smoke test through the ingress (TLS, self-signed)"
for _ in $(seq 1 60); do
  kubectl -n "$NS" get secret model-serving-tls >/dev/null 2>&1 && break; sleep 2
done
body='{"inputs": [
  {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [42]},
  {"name": "merchant_id", "shape": [1], "datatype": "INT64", "data": [7]},
  {"name": "amount", "shape": [1], "datatype": "FP64", "data": [120.5]},
  {"name": "hour", "shape": [1], "datatype": "INT64", "data": [13]},
  {"name": "merchant_category", "shape": [1], "datatype": "INT64", "data": [3]},
  {"name": "distance_from_home", "shape": [1], "datatype": "FP64", "data": [4.2]}]}'
code=$(curl -sk -o /tmp/mlplatform-e2e-infer.json -w '%{http_code}' \
  --resolve "${HOST}:443:127.0.0.1" -H "x-api-key: ${API_KEY}" -H 'content-type: application/json' \
  -d "$body" "https://${HOST}/v2/models/fraud-detector/infer")
cat /tmp/mlplatform-e2e-infer.json; echo
[[ "$code" == 200 ]] || { echo "infer answered $code"; exit 1; }
grep -q '"outputs"' /tmp/mlplatform-e2e-infer.json
# The summarizer through the same host: routed to the model-serving-text release.
code=$(curl -sk -o /tmp/mlplatform-e2e-generate.json -w '%{http_code}' \
  --resolve "${HOST}:443:127.0.0.1" -H "x-api-key: ${API_KEY}" -H 'content-type: application/json' \
  -d '{"text_input": "Acme will open stores in Lisbon on Monday.", "parameters": {"max_tokens": 16}}' \
  "https://${HOST}/v2/models/summarizer/generate")
cat /tmp/mlplatform-e2e-generate.json; echo
[[ "$code" == 200 ]] || { echo "generate answered $code"; exit 1; }
grep -q '"text_output"' /tmp/mlplatform-e2e-generate.json
# Not routed by the ingress: metrics and health stay inside the cluster.
code=$(curl -sk -o /dev/null -w '%{http_code}' --resolve "${HOST}:443:127.0.0.1" "https://${HOST}/metrics")
[[ "$code" == 404 ]] || { echo "/metrics through the ingress answered $code (expected 404)"; exit 1; }
echo "kind e2e: OK"
