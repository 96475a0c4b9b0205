# Vault policy of drift-detection's retraining Job (`mlplatform retrain`, ServiceAccount
# drift-detection-retrain): read its own KV v2 secret, nothing else. The secret holds what a
# training run needs (FEATURES_DATABASE_URL, the feature store's offline store; MLflow credentials
# if the registry takes any), so the Job never reads a service's secret. Installed by
# scripts/vault-bootstrap.sh as mlplatform-<env>-retrain, with the path's "<env>" and "<kv-mount>"
# placeholders filled in. Token lookup-self/renew-self come from Vault's built-in "default" policy,
# which Kubernetes-auth tokens carry.

path "<kv-mount>/data/mlplatform/<env>/retrain" {
  capabilities = ["read"]
}
