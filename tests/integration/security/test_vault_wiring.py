"""The rendered overlays that use Vault line up with scripts/vault-bootstrap.sh.

Each Vault-backed service must end up with:
* secret path ``mlplatform/<env>/<service>``, explicit or from the ``MLPLATFORM_ENV`` and
  ``OTEL_SERVICE_NAME`` default;
* ServiceAccount ``<service>`` in namespace ``mlplatform-<env>``, the binding the bootstrap role
  expects;
* the service-account token mounted, since the backend logs in with it;
* role ``mlplatform-<env>-<service>``.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.core.vault import VaultConfig

ENVS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    render = pytest.importorskip("mlplatform.deploy.render")
    return {env: render.render_overlay(env) for env in ENVS}


def vault_services(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], str | None]]:
    """(ConfigMap data, pod spec, namespace) of every service whose secrets backend is vault."""
    workloads = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "Rollout", "StatefulSet") and "template" in o.get("spec", {})
    }
    out = []
    for o in objects:
        data = o.get("data") or {}
        if o["kind"] == "ConfigMap" and any(
            k.endswith("SECRETS_BACKEND") and v == "vault" for k, v in data.items()
        ):
            out.append((data, workloads[o["metadata"]["name"]], o["metadata"].get("namespace")))
    return out


@pytest.mark.parametrize("env", ENVS)
def test_vault_services_match_bootstrap_paths_and_bindings(rendered, env):
    services = vault_services(rendered[env])
    if env == "prod":
        assert services, "prod must take its secrets from Vault"
    for data, pod, namespace in services:
        service = data["OTEL_SERVICE_NAME"]
        cfg = VaultConfig.from_env(data)
        assert cfg.secret_paths == (f"mlplatform/{env}/{service}",)
        assert (cfg.auth_path, cfg.kv_mount) == ("kubernetes", "secret")
        assert pod.get("serviceAccountName") == service
        assert namespace == f"mlplatform-{env}"
        assert pod.get("automountServiceAccountToken") is True, f"{service}: the backend needs the SA token"


@pytest.mark.parametrize("env", ["prod"])
def test_vault_role_is_per_service(rendered, env):
    for data, _, _ in vault_services(rendered[env]):
        assert data["VAULT_ROLE"] == f"mlplatform-{env}-{data['OTEL_SERVICE_NAME']}"
