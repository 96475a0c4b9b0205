#!/usr/bin/env bash
# Bootstrap HashiCorp Vault for one mlplatform environment (idempotent; safe to re-run).
#
#   scripts/vault-bootstrap.sh --env prod [--namespace mlplatform-prod] [--auth-path kubernetes]
#       [--kv-mount secret] [--kubernetes-host https://kubernetes.default.svc]
#       [--kubernetes-ca-cert FILE] [--token-reviewer-jwt-file FILE] [--audience AUD]
#       [--disable-local-ca-jwt]
#       [--ttl 1h] [--max-ttl 24h] [--seed-dir DIR] [--drift-database-url-file FILE]
#       [--feature-database-url-file FILE] [--mlflow-credentials-dir DIR] [--dry-run]
#
# What it does (with the `vault` CLI, VAULT_ADDR and a token allowed to manage auth, mounts and
# policies in the environment):
#   1. enables the Kubernetes auth method at --auth-path (if not enabled) and configures it
#      (--disable-local-ca-jwt when Vault runs outside the cluster: no pod CA/token files to read);
#   2. enables a KV version 2 engine at --kv-mount (if not enabled);
#   3. for each identity (the services model-serving, feature-store, drift-detection and
#      explainability, and retrain: drift-detection's retraining Job) writes the least-privilege
#      policy policies/vault/<identity>.hcl as mlplatform-<env>-<identity> and a role of the same
#      name bound to the identity's ServiceAccount (a service's own name; drift-detection-retrain
#      for retrain) in --namespace only;
#   4. with --seed-dir, creates <kv-mount>/mlplatform/<env>/<identity> from DIR/<identity>.json when
#      that secret does not exist yet (values are passed as a file, never on the command line);
#   5. with --drift-database-url-file, sets the key DRIFT_DATABASE_URL of
#      <kv-mount>/mlplatform/<env>/drift-detection to the PostgreSQL DSN in FILE (a libpq URL, no
#      trailing newline), creating the secret or patching only that key. drift-detection reads its
#      drift store from it (with the vault backend the chart sets no DSN); e.g. the environment's
#      CloudNativePG cluster: kubectl -n mlplatform-<env> get secret mlplatform-pg-app
#      -o jsonpath='{.data.uri}' | base64 -d > FILE;
#   6. with --feature-database-url-file, the same for the key FEATURES_DATABASE_URL of
#      <kv-mount>/mlplatform/<env>/feature-store (the feature store's Feast SQL registry and
#      PostgreSQL offline store, shared by its replicas and its materialisation CronJob) and of
#      <kv-mount>/mlplatform/<env>/retrain (where the retraining Job reads its training rows);
#   7. with --mlflow-credentials-dir, for each identity with DIR/<identity>.username and
#      DIR/<identity>.password, sets MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of
#      <kv-mount>/mlplatform/<env>/<identity> in one write (one new version: a service never reads a
#      new username with an old password). The services follow them without a restart; rotate a
#      password by changing it in MLflow, then re-running this with the new file.
# The pods then run with VAULT_ROLE=mlplatform-<env>-<identity>,
# VAULT_SECRET_PATH=mlplatform/<env>/<identity> (docs/security.md).
# --dry-run prints the vault commands (and policy bodies) instead of running them.
# The CLI is $VAULT_BIN when set, else `vault`, else OpenBao's `bao` (same commands and flags).
set -euo pipefail

# Vault identities as IDENTITY=SERVICEACCOUNT: policy policies/vault/<IDENTITY>.hcl, role and policy
# mlplatform-<env>-<IDENTITY>, secret mlplatform/<env>/<IDENTITY>, login only as that ServiceAccount.
# The services run as a ServiceAccount of their own name; retrain is drift-detection's retraining Job
# (charts/drift-detection: the Job pods' ServiceAccount <release>-retrain).
IDENTITIES=(
  model-serving=model-serving
  feature-store=feature-store
  drift-detection=drift-detection
  explainability=explainability
  retrain=drift-detection-retrain
)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POLICY_DIR="$ROOT/policies/vault"

ENV_NAME=""
NAMESPACE=""
AUTH_PATH="kubernetes"
KV_MOUNT="secret"
K8S_HOST="https://kubernetes.default.svc"
K8S_CA_CERT=""
REVIEWER_JWT_FILE=""
AUDIENCE=""
TTL="1h"
MAX_TTL="24h"
SEED_DIR=""
DRIFT_DB_URL_FILE=""
FEATURES_DB_URL_FILE=""
MLFLOW_CREDENTIALS_DIR=""
DRY_RUN=0
DISABLE_LOCAL_CA_JWT=0

die() { echo "vault-bootstrap: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --env) ENV_NAME="${2:-}"; shift 2 ;;
    --namespace) NAMESPACE="${2:-}"; shift 2 ;;
    --auth-path) AUTH_PATH="${2:-}"; shift 2 ;;
    --kv-mount) KV_MOUNT="${2:-}"; shift 2 ;;
    --kubernetes-host) K8S_HOST="${2:-}"; shift 2 ;;
    --kubernetes-ca-cert) K8S_CA_CERT="${2:-}"; shift 2 ;;
    --token-reviewer-jwt-file) REVIEWER_JWT_FILE="${2:-}"; shift 2 ;;
    --audience) AUDIENCE="${2:-}"; shift 2 ;;
    --ttl) TTL="${2:-}"; shift 2 ;;
    --max-ttl) MAX_TTL="${2:-}"; shift 2 ;;
    --seed-dir) SEED_DIR="${2:-}"; shift 2 ;;
    --drift-database-url-file) DRIFT_DB_URL_FILE="${2:-}"; shift 2 ;;
    --feature-database-url-file) FEATURES_DB_URL_FILE="${2:-}"; shift 2 ;;
    --mlflow-credentials-dir) MLFLOW_CREDENTIALS_DIR="${2:-}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --disable-local-ca-jwt) DISABLE_LOCAL_CA_JWT=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p;}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ "$ENV_NAME" =~ ^(dev|staging|prod)$ ]] || die "--env must be dev, staging or prod (got '${ENV_NAME}')"
NAMESPACE="${NAMESPACE:-mlplatform-$ENV_NAME}"
AUTH_PATH="${AUTH_PATH#/}"; AUTH_PATH="${AUTH_PATH%/}"
KV_MOUNT="${KV_MOUNT#/}"; KV_MOUNT="${KV_MOUNT%/}"
[[ -n "$AUTH_PATH" && -n "$KV_MOUNT" ]] || die "--auth-path and --kv-mount must not be empty"
[[ -z "$K8S_CA_CERT" || -f "$K8S_CA_CERT" ]] || die "--kubernetes-ca-cert $K8S_CA_CERT is not a file"
[[ -z "$REVIEWER_JWT_FILE" || -f "$REVIEWER_JWT_FILE" ]] || die "--token-reviewer-jwt-file $REVIEWER_JWT_FILE is not a file"
[[ -z "$SEED_DIR" || -d "$SEED_DIR" ]] || die "--seed-dir $SEED_DIR is not a directory"
[[ -z "$DRIFT_DB_URL_FILE" || -f "$DRIFT_DB_URL_FILE" ]] || die "--drift-database-url-file $DRIFT_DB_URL_FILE is not a file"
[[ -z "$FEATURES_DB_URL_FILE" || -f "$FEATURES_DB_URL_FILE" ]] || die "--feature-database-url-file $FEATURES_DB_URL_FILE is not a file"
[[ -z "$MLFLOW_CREDENTIALS_DIR" || -d "$MLFLOW_CREDENTIALS_DIR" ]] || die "--mlflow-credentials-dir $MLFLOW_CREDENTIALS_DIR is not a directory"

if [[ -z "${VAULT_BIN:-}" ]]; then
  VAULT_BIN=vault
  command -v vault >/dev/null || ! command -v bao >/dev/null || VAULT_BIN=bao
fi
vault() { "$VAULT_BIN" "$@"; }

run() {  # run a vault command (or print it with --dry-run)
  if [[ $DRY_RUN -eq 1 ]]; then
    echo "+ vault $*"
  else
    vault "$@"
  fi
}

if [[ $DRY_RUN -eq 0 ]]; then
  command -v "$VAULT_BIN" >/dev/null || die "the vault CLI ($VAULT_BIN) is not on PATH (or OpenBao's bao)"
  [[ -n "${VAULT_ADDR:-}" ]] || die "VAULT_ADDR is not set"
  vault status >/dev/null 2>&1 || die "Vault at $VAULT_ADDR is unreachable or sealed (vault status failed)"
fi

# 1. Kubernetes auth method
# (the listing is read whole before grep: `grep -q` exiting early would SIGPIPE the CLI under pipefail)
if [[ $DRY_RUN -eq 1 ]] || ! grep -q "\"${AUTH_PATH}/\"" <<<"$(vault auth list -format=json)"; then
  run auth enable -path="$AUTH_PATH" kubernetes
else
  echo "kubernetes auth already enabled at $AUTH_PATH/"
fi
config_args=("kubernetes_host=$K8S_HOST")
[[ -n "$K8S_CA_CERT" ]] && config_args+=("kubernetes_ca_cert=@$K8S_CA_CERT")
[[ -n "$REVIEWER_JWT_FILE" ]] && config_args+=("token_reviewer_jwt=@$REVIEWER_JWT_FILE")
[[ $DISABLE_LOCAL_CA_JWT -eq 1 ]] && config_args+=("disable_local_ca_jwt=true")
run write "auth/$AUTH_PATH/config" "${config_args[@]}"

# 2. KV version 2 engine
if [[ $DRY_RUN -eq 1 ]] || ! grep -q "\"${KV_MOUNT}/\"" <<<"$(vault secrets list -format=json)"; then
  run secrets enable -path="$KV_MOUNT" -version=2 kv
else
  echo "secrets engine already mounted at $KV_MOUNT/"
fi

# 3. per-identity policy and role, 4. optional seed
for pair in "${IDENTITIES[@]}"; do
  id="${pair%%=*}"
  sa="${pair#*=}"
  name="mlplatform-$ENV_NAME-$id"
  template="$POLICY_DIR/$id.hcl"
  [[ -f "$template" ]] || die "missing policy template $template"
  body="$(sed -e "s|<env>|$ENV_NAME|g" -e "s|<kv-mount>|$KV_MOUNT|g" "$template")"
  if [[ $DRY_RUN -eq 1 ]]; then
    echo "+ vault policy write $name - <<'HCL'"
    echo "$body"
    echo "HCL"
  else
    printf '%s\n' "$body" | vault policy write "$name" -
  fi
  role_args=(
    "bound_service_account_names=$sa"
    "bound_service_account_namespaces=$NAMESPACE"
    "token_policies=$name"
    "token_ttl=$TTL"
    "token_max_ttl=$MAX_TTL"
  )
  [[ -n "$AUDIENCE" ]] && role_args+=("audience=$AUDIENCE")
  run write "auth/$AUTH_PATH/role/$name" "${role_args[@]}"

  if [[ -n "$SEED_DIR" && -f "$SEED_DIR/$id.json" ]]; then
    path="mlplatform/$ENV_NAME/$id"
    if [[ $DRY_RUN -eq 0 ]] && vault kv get -mount="$KV_MOUNT" "$path" >/dev/null 2>&1; then
      echo "secret $KV_MOUNT/$path exists; left as is (rotate with: vault kv patch -mount=$KV_MOUNT $path KEY=@file)"
    else
      run kv put -mount="$KV_MOUNT" "$path" "@$SEED_DIR/$id.json"
    fi
  fi
  echo "$id (ServiceAccount $sa): VAULT_ROLE=$name VAULT_SECRET_PATH=mlplatform/$ENV_NAME/$id (namespace $NAMESPACE)"
done

# 5./6./7. Keys of an identity's secret in one write, values from files (never argv).
set_keys() {  # set_keys IDENTITY KEY=@FILE...
  local path="mlplatform/$ENV_NAME/$1"
  shift
  if [[ $DRY_RUN -eq 0 ]] && vault kv get -mount="$KV_MOUNT" "$path" >/dev/null 2>&1; then
    run kv patch -mount="$KV_MOUNT" "$path" "$@"
  else
    run kv put -mount="$KV_MOUNT" "$path" "$@"
  fi
}
set_url_key() {  # set_url_key IDENTITY KEY FILE
  set_keys "$1" "$2=@$3"
  echo "$1: $2 of $KV_MOUNT/mlplatform/$ENV_NAME/$1 set from $3"
}
if [[ -n "$DRIFT_DB_URL_FILE" ]]; then
  set_url_key drift-detection DRIFT_DATABASE_URL "$DRIFT_DB_URL_FILE"
fi
if [[ -n "$FEATURES_DB_URL_FILE" ]]; then
  set_url_key feature-store FEATURES_DATABASE_URL "$FEATURES_DB_URL_FILE"
  set_url_key retrain FEATURES_DATABASE_URL "$FEATURES_DB_URL_FILE"
fi
if [[ -n "$MLFLOW_CREDENTIALS_DIR" ]]; then
  for entry in "${IDENTITIES[@]}"; do
    id="${entry%%=*}"
    user="$MLFLOW_CREDENTIALS_DIR/$id.username" pass="$MLFLOW_CREDENTIALS_DIR/$id.password"
    [[ -f "$user" && -f "$pass" ]] || continue
    set_keys "$id" "MLFLOW_TRACKING_USERNAME=@$user" "MLFLOW_TRACKING_PASSWORD=@$pass"
    echo "$id: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of $KV_MOUNT/mlplatform/$ENV_NAME/$id set from $MLFLOW_CREDENTIALS_DIR"
  done
fi
