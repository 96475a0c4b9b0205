#!/usr/bin/env bash
# Build the service images from the one services/Dockerfile with the base pinned in services/base.env.
#   services/build.sh [TAG] [SERVICE...]       (default: the package version, all services)
# Each service of services/images.txt gets <registry>/mlplatform/<service>:TAG (target cpu); those
# with GPU=yes also <service>-gpu:TAG (target gpu, CUDA torch). Set REGISTRY (default ghcr.io) and
# PUSH=1 to push.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source services/base.env
TAG="${1:-$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
shift || true
REGISTRY="${REGISTRY:-ghcr.io}"
declare -A PORT EXTRA GPU
while read -r svc port extra gpu; do
  [[ -z "${svc}" || "${svc}" == \#* ]] && continue
  PORT[$svc]="${port}" EXTRA[$svc]="${extra}" GPU[$svc]="${gpu}"
done < services/images.txt
if [[ $# -gt 0 ]]; then SERVICES=("$@"); else SERVICES=(model-serving feature-store drift-detection explainability); fi
for svc in "${SERVICES[@]}"; do
  [[ -n "${PORT[$svc]:-}" ]] || { echo "unknown service ${svc} (see services/images.txt)" >&2; exit 2; }
  args=(--file services/Dockerfile --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}"
        --build-arg "SERVICE=${svc}" --build-arg "PORT=${PORT[$svc]}" --build-arg "EXTRA=${EXTRA[$svc]}")
  docker build "${args[@]}" --target cpu \
    --build-arg "TORCH_INDEX=${TORCH_CPU_INDEX}" --build-arg "TORCH_VERSION=${TORCH_CPU_VERSION}" \
    -t "${REGISTRY}/mlplatform/${svc}:${TAG}" .
  if [[ "${GPU[$svc]}" == yes ]]; then
    docker build "${args[@]}" --target gpu \
      --build-arg "TORCH_INDEX=${TORCH_CUDA_INDEX}" --build-arg "TORCH_VERSION=${TORCH_CUDA_VERSION}" \
      -t "${REGISTRY}/mlplatform/${svc}-gpu:${TAG}" .
  fi
  if [[ "${PUSH:-0}" == 1 ]]; then
    docker push "${REGISTRY}/mlplatform/${svc}:${TAG}"
    if [[ "${GPU[$svc]}" == yes ]]; then docker push "${REGISTRY}/mlplatform/${svc}-gpu:${TAG}"; fi
  fi
done
