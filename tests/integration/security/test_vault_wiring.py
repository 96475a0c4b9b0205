"""The rendered overlays that use Vault line up with scripts/vault-bootstrap.sh.

Each Vault-backed service must end up with:
* secret path ``mlplatform/<env>/<service>``, explicit or from the ``MLPLATFORM_ENV`` and
  ``OTEL_SERVICE_NAME`` default;
* ServiceAccount ``<service>`` in namespace ``mlplatform-<env>``, the binding the bootstrap role
  expects;
* a short-lived projected service-account token mounted where ``VAULT_SA_TOKEN_PATH`` points (the
  backend logs in with it), and the API token only for drift-detection, which creates Jobs;
* role ``mlplatform-<env>-<service>``.

And every pod that logs in to Vault (the services, the feature store's materialisation CronJob and
drift-detection's retraining Job template) uses a role that ``vault-bootstrap.sh --dry-run`` binds to
that pod's ServiceAccount and namespace, with a policy that grants the pod's secret path.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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
        # the login token: a projected service-account token (1 h) where VAULT_SA_TOKEN_PATH points
        container = pod["containers"][0]
        env_vars = {e["name"]: e.get("value") for e in container.get("env", [])}
        token_path = env_vars.get("VAULT_SA_TOKEN_PATH") or data.get("VAULT_SA_TOKEN_PATH")
        assert token_path, f"{service}: VAULT_SA_TOKEN_PATH is not set"
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        folder, _, file = token_path.rpartition("/")
        assert folder in mounts, f"{service}: nothing is mounted at {folder}"
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[folder])
        sources = [
            s["serviceAccountToken"] for s in volume["projected"]["sources"] if "serviceAccountToken" in s
        ]
        assert sources and sources[0]["path"] == file and sources[0]["expirationSeconds"] <= 3600
        # the API token only where the service calls the Kubernetes API
        api = data.get("DRIFT_RETRAIN_MODE") == "kubernetes"
        assert pod.get("automountServiceAccountToken") is api, service


@pytest.mark.parametrize("env", ["prod"])
def test_vault_role_is_per_service(rendered, env):
    for data, _, _ in vault_services(rendered[env]):
        assert data["VAULT_ROLE"] == f"mlplatform-{env}-{data['OTEL_SERVICE_NAME']}"


def bootstrap_roles(env: str) -> dict[str, tuple[str, str, set[str]]]:
    """What ``scripts/vault-bootstrap.sh --env ENV --dry-run`` sets up: role -> (bound ServiceAccount,
    bound namespace, the KV v2 data paths its policy may read)."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "vault-bootstrap.sh"
    out = subprocess.run(
        ["bash", str(script), "--env", env, "--dry-run"], capture_output=True, text=True, check=True
    ).stdout
    policies = {
        name: set(re.findall(r'path "([^"]+)"', body))
        for name, body in re.findall(r"\+ vault policy write (\S+) - <<'HCL'\n(.*?)\nHCL\n", out, re.S)
    }
    roles = {}
    for line in out.splitlines():
        if line.startswith("+ vault write auth/kubernetes/role/"):
            name, *args = line.split()[3:]
            kv = dict(a.split("=", 1) for a in args)
            roles[name.rsplit("/", 1)[1]] = (
                kv["bound_service_account_names"],
                kv["bound_service_account_namespaces"],
                policies[kv["token_policies"]],
            )
    return roles


def vault_logins(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, str], dict[str, Any], str]]:
    """(what, Vault environment, pod spec, namespace) of every pod that logs in to Vault: the services,
    the feature store's materialisation CronJob and drift-detection's retraining Job template."""
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    out = []
    for o in objects:
        ns = o["metadata"].get("namespace", "")
        if o["kind"] == "CronJob":
            pod = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] in ("Deployment", "Rollout", "StatefulSet") and "template" in o.get("spec", {}):
            pod = o["spec"]["template"]["spec"]
        else:
            continue
        for container in pod["containers"]:
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env.update(maps.get(source.get("configMapRef", {}).get("name"), {}))
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            if any(k.endswith("SECRETS_BACKEND") and v == "vault" for k, v in env.items()):
                out.append((f"{o['kind']}/{o['metadata']['name']}", env, pod, ns))
            template = env.get("DRIFT_RETRAIN_JOB_TEMPLATE")
            if template:
                job = yaml.safe_load(maps[f"{o['metadata']['name']}-retrain"][template.rsplit("/", 1)[1]])
                job_pod = job["spec"]["template"]["spec"]
                (job_container,) = job_pod["containers"]
                job_env = {e["name"]: e["value"] for e in job_container["env"] if "value" in e}
                if job_env.get("MLPLATFORM_SECRETS_BACKEND") == "vault":
                    out.append(("Job template drift-detection-retrain", job_env, job_pod, ns))
    return out


@pytest.mark.parametrize("env", ENVS)
def test_every_vault_login_matches_a_bootstrap_role(rendered, env):
    """Each pod that logs in to Vault uses a role the bootstrap script binds to that pod's
    ServiceAccount in its namespace, and reads only paths that role's policy grants."""
    logins = vault_logins(rendered[env])
    if env != "prod":
        assert logins == []
        return
    what = {w for w, *_ in logins}
    assert "Job template drift-detection-retrain" in what and "CronJob/feature-store-materialize" in what
    roles = bootstrap_roles(env)
    for name, vault_env, pod, namespace in logins:
        cfg = VaultConfig.from_env(vault_env)
        assert cfg.role in roles, f"{name}: role {cfg.role} is not created by vault-bootstrap.sh"
        account, bound_ns, readable = roles[cfg.role]
        assert (pod["serviceAccountName"], namespace) == (account, bound_ns), name
        assert {f"{cfg.kv_mount}/data/{p}" for p in cfg.secret_paths} <= readable, name
    # least privilege: the Job and the services never share a role
    job_roles = {VaultConfig.from_env(e).role for w, e, _, _ in logins if w.startswith("Job")}
    service_roles = {VaultConfig.from_env(e).role for w, e, _, _ in logins if not w.startswith("Job")}
    assert job_roles == {f"mlplatform-{env}-retrain"} and not job_roles & service_roles
