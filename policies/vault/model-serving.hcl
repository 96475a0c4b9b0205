# Vault policy of the model-serving service: read its own KV v2 secret, nothing else.
# Installed by scripts/vault-bootstrap.sh as mlplatform-<env>-model-serving, with the path's
# "<env>" and "<kv-mount>" placeholders filled in. Token lookup-self/renew-self come from
# Vault's built-in "default" policy, which Kubernetes-auth tokens carry.

path "<kv-mount>/data/mlplatform/<env>/model-serving" {
  capabilities = ["read"]
}
