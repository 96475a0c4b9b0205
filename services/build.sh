#!/usr/bin/env bash
# Build the service images with the base pinned in services/base.env.
#   services/build.sh [TAG] [SERVICE...]       (default: the package version, all services)
# Each service gets <registry>/mlplatform/<service>:TAG; model-serving and explainability also
# <service>-gpu:TAG (CUDA torch). Set REGISTRY (default ghcr.io) and PUSH=1 to push.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source services/base.env
TAG="${1:-$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
shift || true
if [[ $# -gt 0 ]]; then SERVICES=("$@"); else SERVICES=(model-serving feature-store drift-detection explainability); fi
REGISTRY="${REGISTRY:-ghcr.io}"
args=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
for svc in "${SERVICES[@]}"; do
  docker build "${args[@]}" \
    --build-arg "TORCH_INDEX=${TORCH_CPU_INDEX}" --build-arg "TORCH_VERSION=${TORCH_CPU_VERSION}" \
    -f "services/${svc}/Dockerfile" -t "${REGISTRY}/mlplatform/${svc}:${TAG}" .
  if [[ -f "services/${svc}/Dockerfile.gpu" ]]; then
    docker build "${args[@]}" \
      --build-arg "TORCH_INDEX=${TORCH_CUDA_INDEX}" --build-arg "TORCH_VERSION=${TORCH_CUDA_VERSION}" \
      -f "services/${svc}/Dockerfile.gpu" -t "${REGISTRY}/mlplatform/${svc}-gpu:${TAG}" .
  fi
  if [[ "${PUSH:-0}" == 1 ]]; then
    docker push "${REGISTRY}/mlplatform/${svc}:${TAG}"
    [[ -f "services/${svc}/Dockerfile.gpu" ]] && docker push "${REGISTRY}/mlplatform/${svc}-gpu:${TAG}"
  fi
done
