"""feature-store as deployed: its PostgreSQL (Feast SQL registry + offline store) and the
materialisation CronJob, in every overlay.

No cluster runs here: the CronJob is checked against the Kubernetes 1.32 batch/v1 schema
(kubernetes-validate), run through every Gatekeeper policy in-process (tests/policies/gatekeeper.py,
regopy) as the CronJob and as the Pod its Jobs create, checked against the restricted Pod Security
Standard, and its network flows are evaluated against every rendered NetworkPolicy (including the
PostgreSQL cluster's own).
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import pytest

from mlplatform.deploy.render import ENVIRONMENTS, helm_template
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import (
    EXTERNAL_PODS,
    PG_CLUSTER,
    Pod,
    by_kind,
    flow_allowed,
    pods_of,
    postgres_pod,
    selector_matches,
    validate_object,
)
from tests.deploy.rendered import (
    config_maps,
    container_env,
    find,
    helm_template_fails,
    main_container,
    workload,
)
from tests.policies.gatekeeper import load_policies, matches

FEATURES = "feature-store"
CRONJOB = "feature-store-materialize"
POLICIES = load_policies()
#: Where each overlay runs the CronJob: only with a shared (Redis) online store.
MATERIALIZES = {"dev": False, "staging": True, "prod": True}


def _cronjob(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "CronJob", CRONJOB)


def _pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _job_pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The Pod a Job of the CronJob creates."""
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **template["metadata"],
            "name": f"{CRONJOB}-29000000-abcde",
            "namespace": cronjob["metadata"]["namespace"],
        },
        "spec": template["spec"],
    }


def _denials(obj: dict[str, Any]) -> tuple[list[str], set[str]]:
    denied, ran = [], set()
    for policy in POLICIES:
        if not matches(policy.constraint["spec"]["match"], obj):
            continue
        ran.add(policy.name)
        for v in policy.violations(obj, policy.constraint["spec"].get("parameters", {})):
            denied.append(f"[{policy.name}] {v['msg']}")
    return denied, ran


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_database_url_wiring(rendered, env):
    """The URL reaches the service from CloudNativePG's Secret (env backend) or from Vault (nothing
    rendered), never from a ConfigMap; every replica is told the database is required."""
    objects = rendered[env]
    service_env = container_env(objects, FEATURES)
    assert service_env["FEATURES_DATABASE_REQUIRED"] == "true"
    assert config_maps(objects)[FEATURES]["FEATURES_DATABASE_REQUIRED"] == "true"
    if service_env["FEATURES_SECRETS_BACKEND"] == "env":
        assert service_env["FEATURES_DATABASE_URL"] == {
            "secretKeyRef": {"name": f"{PG_CLUSTER}-app", "key": "uri"}
        }
        find(objects, "Cluster", PG_CLUSTER)
    else:
        assert env == "prod" and service_env["FEATURES_SECRETS_BACKEND"] == "vault"
        assert "FEATURES_DATABASE_URL" not in service_env
    for data in config_maps(objects).values():
        assert "FEATURES_DATABASE_URL" not in data
        assert not any("postgresql://" in str(v) for v in data.values())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_materialize_cronjob_where_the_online_store_is_shared(rendered, env):
    objects = rendered[env]
    store = config_maps(objects)[FEATURES]["FEATURES_ONLINE_STORE"]
    assert bool(by_kind(objects, "CronJob")) == MATERIALIZES[env] == (store == "redis")
    if not MATERIALIZES[env]:
        return
    cronjob = _cronjob(objects)
    assert validate_object(cronjob) == []
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedule"] and spec["timeZone"] == "Etc/UTC"
    job = spec["jobTemplate"]["spec"]
    assert (
        job["backoffLimit"] <= 3 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    )
    pod = _pod_spec(cronjob)
    (container,) = pod["containers"]
    service = main_container(objects, FEATURES)
    # the platform image running the CLI command, with the service's own settings and secrets
    assert container["image"] == service["image"]
    assert container["args"][0] == "materialize"
    assert container["envFrom"] == service["envFrom"]
    service_secret_env = [e for e in service.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    database = [e for e in service_secret_env if e["name"] == "FEATURES_DATABASE_URL"]
    assert [e for e in container.get("env", []) if e["name"] == "FEATURES_DATABASE_URL"] == database
    assert (
        pod["serviceAccountName"]
        == workload(objects, FEATURES)["spec"]["template"]["spec"]["serviceAccountName"]
    )
    assert pod["restartPolicy"] == "Never"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if MATERIALIZES[e]])
def test_materialize_pod_is_restricted_and_has_no_api_token(rendered, env):
    cronjob = _cronjob(rendered[env])
    pod = _pod_spec(cronjob)
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc.get("runAsUser") != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    data_dir = config_maps(rendered[env])[FEATURES]["MLPLATFORM_DATA_DIR"]
    assert "emptyDir" in volumes[mounts[data_dir]]
    allowed = {"emptyDir", "projected", "configMap", "secret", "downwardAPI"}
    assert all(set(v) - {"name"} <= allowed for v in volumes.values())
    if env == "prod":
        # Vault login with a short-lived projected token, not the automounted API token
        env_vars = {e["name"]: e.get("value") for e in container["env"]}
        token_dir = env_vars["VAULT_SA_TOKEN_PATH"].rpartition("/")[0]
        projected = volumes[mounts[token_dir]]["projected"]["sources"][0]["serviceAccountToken"]
        assert projected["expirationSeconds"] <= 3600


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if MATERIALIZES[e]])
def test_materialize_cronjob_and_its_pod_pass_every_gatekeeper_policy(rendered, env):
    cronjob = _cronjob(rendered[env])
    for obj in (cronjob, _job_pod(cronjob)):
        denied, ran = _denials(obj)
        assert denied == [], f"{obj['kind']}: {denied}"
        assert {"k8spodsecurity", "k8scontainerresources", "k8sallowedimages", "k8srequiredlabels"} <= ran


def test_gatekeeper_check_sees_a_bad_cronjob(rendered):
    cronjob = copy.deepcopy(_cronjob(rendered["staging"]))
    _pod_spec(cronjob)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del _pod_spec(cronjob)["containers"][0]["resources"]["limits"]
    denied, _ = _denials(cronjob)
    assert any("[k8spodsecurity]" in d for d in denied) and any(
        "[k8scontainerresources]" in d for d in denied
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_network_flows_to_postgres_and_of_the_materialize_pods(rendered, env):
    objects = rendered[env]
    policies = by_kind(objects, "NetworkPolicy")
    pods = pods_of(objects)
    ns = f"mlplatform-{env}"
    pg = postgres_pod(objects, env)
    redis = EXTERNAL_PODS["redis"]
    vault = EXTERNAL_PODS["vault"]
    dns = EXTERNAL_PODS["dns"]
    mlflow = EXTERNAL_PODS["mlflow"]
    allowed = partial(flow_allowed, policies)  # allowed(src, dst, port, protocol="TCP")
    # every replica reaches the shared database
    assert allowed(pods[FEATURES], pg, 5432)
    if not MATERIALIZES[env]:
        return
    cronjob = _cronjob(objects)
    job = Pod(ns, cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    assert allowed(job, pg, 5432) and allowed(job, redis, 6379) and allowed(job, dns, 53, "UDP")
    assert allowed(job, vault, 8200) == (env == "prod")
    assert not allowed(job, mlflow, 5000) and not allowed(job, pods["model-serving"], 8080)
    for src in (pods["model-serving"], pods["explainability"], pods[FEATURES]):
        assert not allowed(src, job, 8081)
    # the service's Service, PDB and NetworkPolicy never select a materialisation pod
    for obj in (find(objects, "Service", FEATURES), find(objects, "NetworkPolicy", FEATURES)):
        selector = obj["spec"].get("podSelector") or {"matchLabels": obj["spec"]["selector"]}
        assert not selector_matches(selector, job.labels)
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert not selector_matches(pdb["spec"]["selector"], job.labels)


def _quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if MATERIALIZES[e]])
def test_materialize_job_fits_the_limit_range(rendered, env):
    limits = _pod_spec(_cronjob(rendered[env]))["containers"][0]["resources"]["limits"]
    maximum = by_kind(rendered[env], "LimitRange")[0]["spec"]["limits"][0]["max"]
    for res in ("cpu", "memory"):
        assert _quantity(limits[res]) <= _quantity(maximum[res])


# -- the chart on its own -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["materialize.enabled=true"], "materialize.enabled needs database.enabled"),
        (
            ["materialize.enabled=true", "database.enabled=true", "database.existingSecret=pg-app"],
            "materialize.enabled needs a shared online store",
        ),
        (["database.enabled=true"], "database.existingSecret is required"),
        (["database.existingSecret=pg-app"], "database.enabled is false"),
        (
            [
                "database.enabled=true",
                "database.existingSecret=pg-app",
                "secrets.backend=vault",
                "secrets.vault.addr=https://vault:8200",
                "secrets.vault.role=r",
            ],
            "database.existingSecret is for secrets.backend env",
        ),
        (["materialize.schedule=every 5 minutes"], "schedule"),
    ],
)
def test_chart_refuses_inconsistent_values(sets, needle):
    assert needle in helm_template_fails(FEATURES, *sets)


def test_chart_defaults_keep_the_embedded_registry():
    objects = helm_template(FEATURES, root=ROOT)
    assert not by_kind(objects, "CronJob")
    data = config_maps(objects)[FEATURES]
    assert "FEATURES_DATABASE_REQUIRED" not in data
    (deployment,) = by_kind(objects, "Deployment")
    names = [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])]
    assert "FEATURES_DATABASE_URL" not in names
