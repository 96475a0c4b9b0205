"""drift-detection as deployed: its PostgreSQL and the retraining Jobs it starts, in every overlay.

No cluster runs here: the Job template is taken from the rendered ConfigMap the pod mounts, checked
against the Kubernetes 1.32 batch/v1 schema (kubernetes-validate), run through every Gatekeeper
policy in-process (tests/policies/gatekeeper.py, regopy) as the Job and as the Pod its controller
creates, and checked against the restricted Pod Security Standard explicitly. The RBAC check
compares the rendered Role with what mlplatform.drift.retrain does: create a Job in
DRIFT_RETRAIN_NAMESPACE, which the downward API sets to the pod's own namespace.
"""

from __future__ import annotations

import copy
import re
from functools import partial
from typing import Any

import pytest
import yaml

from mlplatform.core.vault import VaultConfig
from mlplatform.deploy.render import ENVIRONMENTS, helm_template
from mlplatform.drift.retrain import build_job
from mlplatform.drift.settings import DriftSettings
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import (
    EXTERNAL_PODS,
    PG_CLUSTER,
    Pod,
    by_kind,
    flow_allowed,
    pods_of,
    postgres_pod,
    validate_object,
    workloads,
)
from tests.deploy.rendered import (
    config_maps,
    container_env,
    find,
    retrain_job_template,
    retrain_job_template_text,
    run_helm_template,
    workload,
)
from tests.policies.gatekeeper import load_policies, matches

DRIFT = "drift-detection"
POLICIES = load_policies()
PROMOTE = {"dev": "auto", "staging": "auto", "prod": "manual"}
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _job(objects: list[dict[str, Any]], env: str) -> dict[str, Any]:
    """The Job template as the API server would admit it: in the namespace, with a name."""
    job = retrain_job_template(objects)
    job["metadata"]["namespace"] = f"mlplatform-{env}"
    job["metadata"]["name"] = job["metadata"]["generateName"] + "x7k2p"
    return job


def _job_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The Pod the Job controller creates from the template."""
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **template.get("metadata", {}),
            "name": job["metadata"]["name"] + "-abcde",
            "namespace": job["metadata"]["namespace"],
        },
        "spec": template["spec"],
    }


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the Kubernetes *restricted* Pod Security Standard (v1.32) forbids in a pod spec."""
    problems: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"pod sets {field}")
    for vol in pod_spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {vol['name']} is {sorted(kinds)}")
    if psc.get("sysctls"):
        problems.append("pod sets sysctls")
    if psc.get("runAsUser") == 0:
        problems.append("pod runs as uid 0")
    if psc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile is not RuntimeDefault/Localhost")
    for c in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} does not set allowPrivilegeEscalation: false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{where} does not run as non-root")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{where} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} has no RuntimeDefault/Localhost seccomp profile")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{where} uses a hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where} sets procMount")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{where} is a Windows host process")
    return problems


def _policy_violations(obj: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Every project Gatekeeper policy whose sample constraint selects ``obj``: (denials, policies run)."""
    denied, ran = [], set()
    for policy in POLICIES:
        constraint = policy.constraint
        if not matches(constraint["spec"]["match"], obj):
            continue
        ran.add(policy.name)
        for v in policy.violations(obj, constraint["spec"].get("parameters", {})):
            denied.append(f"[{policy.name}] {v['msg']}")
    return denied, ran


# -- the retraining Job template ---------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_retrain_job_template_is_a_valid_batch_v1_job(rendered, env, tmp_path):
    job = _job(rendered[env], env)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert validate_object(job) == []
    spec = job["spec"]
    assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # What the launcher will send: the template plus the model env, still a valid Job.
    path = tmp_path / "job.yaml"  # the launcher reads the mounted file: yaml.safe_load, deep copy, append env
    path.write_text(retrain_job_template_text(rendered[env]))
    settings = DriftSettings(retrain_job_template=path, retrain_namespace=f"mlplatform-{env}")
    sent = build_job(settings, "fraud-detector", "3", "dataset drift")
    sent["metadata"]["namespace"], sent["metadata"]["name"] = f"mlplatform-{env}", "retrain-x"
    assert validate_object(sent) == []
    (container,) = sent["spec"]["template"]["spec"]["containers"]
    assert container["env"][-2:] == [
        {"name": "MLPLATFORM_RETRAIN_MODEL", "value": "fraud-detector"},
        {"name": "MLPLATFORM_RETRAIN_FROM_VERSION", "value": "3"},
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_retrain_job_passes_every_gatekeeper_policy(rendered, env):
    job = _job(rendered[env], env)
    for obj in (job, _job_pod(job)):
        denied, ran = _policy_violations(obj)
        assert denied == [], f"{obj['kind']}: {denied}"
        assert {"k8spodsecurity", "k8scontainerresources", "k8sallowedimages", "k8srequiredlabels"} <= ran


def test_gatekeeper_check_sees_a_bad_job(rendered):
    """The wrapped Job is really evaluated: a privileged, unbounded variant is denied."""
    job = _job(rendered["dev"], "dev")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["privileged"] = True
    del container["resources"]["limits"]
    denied, _ = _policy_violations(job)
    assert any("k8spodsecurity" in d for d in denied) and any("k8scontainerresources" in d for d in denied)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_retrain_job_is_restricted_pod_security(rendered, env):
    pod = _job(rendered[env], env)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env_values = {e["name"]: e.get("value") for e in container["env"]}
    for path in ("/tmp", env_values["MLPLATFORM_DATA_DIR"]):
        assert "emptyDir" in volumes[mounts[path]], path
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # every mount has its volume; the only non-emptyDir volume is prod's Vault login token, read-only
    assert set(mounts.values()) == set(volumes)
    for mount in container["volumeMounts"]:
        if "emptyDir" not in volumes[mount["name"]]:
            assert env == "prod" and "projected" in volumes[mount["name"]] and mount["readOnly"] is True


def test_restricted_check_sees_violations():
    bad = {
        "hostNetwork": True,
        "securityContext": {},
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
    }
    problems = restricted_violations(bad)
    for needle in ("hostNetwork", "hostPath", "allowPrivilegeEscalation", "non-root", "seccomp", "SYS_ADMIN"):
        assert any(needle in p for p in problems), needle


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_retrain_job_runs_the_platform_image_and_settings(rendered, env):
    objects = rendered[env]
    job = retrain_job_template(objects)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    service = workload(objects, DRIFT)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == service["image"]  # the drift-detection image carries `mlplatform retrain`
    assert container["command"] == ["mlplatform", "retrain"]
    env_vars = {e["name"]: e for e in container["env"]}
    values = {name: e.get("value") for name, e in env_vars.items()}
    service_env = container_env(objects, DRIFT)
    assert values["MLFLOW_TRACKING_URI"] == service_env["MLFLOW_TRACKING_URI"]
    assert values["MLPLATFORM_ENV"] == values["MLPLATFORM_RETRAIN_ENV"] == env
    assert values["MLPLATFORM_DATA_DIR"] == service_env["MLPLATFORM_DATA_DIR"]
    assert values["MLPLATFORM_RETRAIN_PROMOTE"] == PROMOTE[env]
    assert 0.0 <= float(values["MLPLATFORM_RETRAIN_MARGIN"]) < 1.0
    assert values["TRAIN_FEATURE_SERVICE"] and values["TRAIN_FEATURE_SOURCE"] in ("feast", "pandas")
    # The launcher adds these per trigger; the template must not carry stale ones.
    assert not {"MLPLATFORM_RETRAIN_MODEL", "MLPLATFORM_RETRAIN_FROM_VERSION"} & set(env_vars)
    # Training pods are not the service's pods: no Service, PDB or service NetworkPolicy selects them.
    labels = job["spec"]["template"]["metadata"]["labels"]
    for svc in by_kind(objects, "Service"):
        assert not set(svc["spec"]["selector"].items()) <= set(labels.items())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_retrain_job_secrets_wiring(rendered, env):
    """Where the training rows' database URL comes from: the CloudNativePG Secret (env backend), or
    the Job's own Vault identity (prod): role mlplatform-<env>-retrain, secret mlplatform/<env>/retrain,
    logged in to with a short-lived projected token; the service's Vault settings otherwise."""
    objects = rendered[env]
    pod = retrain_job_template(objects)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env_vars = {e["name"]: e for e in container["env"]}
    values = {name: e.get("value") for name, e in env_vars.items()}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    service_env = container_env(objects, DRIFT)
    assert pod["serviceAccountName"] == "drift-detection-retrain"  # what vault-bootstrap.sh binds
    assert pod["automountServiceAccountToken"] is False
    assert len(env_vars) == len(container["env"]), "an env name twice"
    vault_names = {n for n in env_vars if n.startswith("VAULT_")} | {"MLPLATFORM_SECRETS_BACKEND"}
    if service_env["DRIFT_SECRETS_BACKEND"] == "env":
        # dev/staging: retrain.extraEnv, CloudNativePG's generated Secret; no Vault anywhere
        assert env_vars["FEATURES_DATABASE_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": f"{PG_CLUSTER}-app", "key": "uri"}
        }
        assert vault_names == {"MLPLATFORM_SECRETS_BACKEND"} and "MLPLATFORM_SECRETS_BACKEND" not in env_vars
        assert not any("projected" in v for v in volumes.values())
        return
    assert env == "prod"
    assert "FEATURES_DATABASE_URL" not in env_vars  # the key of mlplatform/prod/retrain in Vault
    assert values["MLPLATFORM_SECRETS_BACKEND"] == "vault"
    assert values["VAULT_ROLE"] == f"mlplatform-{env}-retrain" != service_env["VAULT_ROLE"]
    assert values["VAULT_SECRET_PATH"] == f"mlplatform/{env}/retrain"
    job_vault, service_vault = VaultConfig.from_env(values), VaultConfig.from_env(service_env)
    assert job_vault.addr == service_vault.addr
    assert (job_vault.auth_path, job_vault.kv_mount) == (service_vault.auth_path, service_vault.kv_mount)
    assert job_vault.secret_paths == (f"mlplatform/{env}/retrain",)
    # a projected token (bounded lifetime, default audience), not the automounted API token
    token_dir, _, token_file = values["VAULT_SA_TOKEN_PATH"].rpartition("/")
    mount = mounts[token_dir]
    assert mount["readOnly"] is True
    (source,) = volumes[mount["name"]]["projected"]["sources"]
    assert source["serviceAccountToken"]["path"] == token_file
    assert 600 <= source["serviceAccountToken"]["expirationSeconds"] <= 3600
    assert "audience" not in source["serviceAccountToken"]
    assert token_dir != "/var/run/secrets/kubernetes.io/serviceaccount"


# -- RBAC: exactly what the launcher does, in its own namespace ----------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_role_grants_exactly_job_creation_in_the_launchers_namespace(rendered, env):
    objects = rendered[env]
    deployment = workload(objects, DRIFT)
    pod = deployment["spec"]["template"]["spec"]
    service_env = container_env(objects, DRIFT)
    assert service_env["DRIFT_RETRAIN_MODE"] == "kubernetes"
    assert service_env["DRIFT_RETRAIN_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    namespace = deployment["metadata"]["namespace"]  # what metadata.namespace resolves to
    assert namespace == f"mlplatform-{env}"

    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    account = pod["serviceAccountName"]
    granted = [
        (b, find(objects, "Role", b["roleRef"]["name"]))
        for b in bindings
        if {"kind": "ServiceAccount", "name": account, "namespace": namespace} in b["subjects"]
    ]
    assert len(granted) == 1, f"{account} is bound {len(granted)} times"
    binding, role = granted[0]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
    ]
    # The token the kubernetes client's in-cluster config reads is mounted.
    assert pod["automountServiceAccountToken"] is True
    find(objects, "ServiceAccount", account)
    # The Job's own identity gets no token and no RBAC.
    job_account = retrain_job_template(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    assert find(objects, "ServiceAccount", job_account)["automountServiceAccountToken"] is False
    assert not any(s["name"] == job_account for b in bindings for s in b["subjects"])
    assert [r for r in roles if r["metadata"]["name"] == role["metadata"]["name"]] == [role]


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_postgres_cluster_in_every_environment(rendered, env):
    objects = rendered[env]
    cluster = find(objects, "Cluster", PG_CLUSTER)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert validate_object(cluster) == []
    spec = cluster["spec"]
    assert spec["instances"] == {"dev": 1, "staging": 2, "prod": 3}[env]
    assert spec["bootstrap"]["initdb"] == {"database": "mlplatform", "owner": "mlplatform"}
    assert spec["storage"]["size"] and spec["enableSuperuserAccess"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind])
    # Synced before the services, which read the Secret the operator creates.
    wave = int(cluster["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    for w in workloads(objects):
        assert wave < int((w["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))
    assert re.fullmatch(
        r"ghcr\.io/mlplatform/postgresql:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", spec["imageName"]
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_postgres_pods_pass_the_policies_our_spec_controls(rendered, env):
    """The instance Pod CloudNativePG creates, as far as this repository decides it: the image, the
    resources and the inherited labels (CNPG sets its own restricted securityContext, not modelled)."""
    spec = find(rendered[env], "Cluster", PG_CLUSTER)["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{PG_CLUSTER}-1",
            "namespace": f"mlplatform-{env}",
            "labels": {**spec["inheritedMetadata"]["labels"], "cnpg.io/cluster": PG_CLUSTER},
        },
        "spec": {
            "containers": [{"name": "postgres", "image": spec["imageName"], "resources": spec["resources"]}]
        },
    }
    wanted = {"k8sallowedimages", "k8scontainerresources", "k8srequiredlabels"}
    for policy in POLICIES:
        if policy.name in wanted:
            assert matches(policy.constraint["spec"]["match"], pod)
            assert policy.violations(pod, policy.constraint["spec"].get("parameters", {})) == [], policy.name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_drift_database_url_wiring(rendered, env):
    objects = rendered[env]
    service_env = container_env(objects, DRIFT)
    backend = service_env["DRIFT_SECRETS_BACKEND"]
    if backend == "env":
        # CloudNativePG's generated Secret <cluster>-app, key uri (a libpq URL).
        assert service_env["DRIFT_DATABASE_URL"] == {
            "secretKeyRef": {"name": f"{PG_CLUSTER}-app", "key": "uri"}
        }
        find(objects, "Cluster", PG_CLUSTER)
    else:
        # Vault: the DSN is the key DRIFT_DATABASE_URL of mlplatform/<env>/drift-detection; nothing rendered.
        assert backend == "vault"
        assert "DRIFT_DATABASE_URL" not in service_env
    assert (backend == "vault") == (env == "prod")


_DSN = re.compile(r"postgres(ql)?://", re.I)
_PASSWORD = re.compile(r"(?i)password\s*[=:]|://[^/\s:@]+:[^/\s@]+@")


def credential_findings(objects: list[dict[str, Any]]) -> list[str]:
    """ConfigMap entries that look like a database URL or carry a password."""
    found = []
    for name, data in config_maps(objects).items():
        for key, value in data.items():
            if _DSN.search(value) or _PASSWORD.search(value) or re.search(r"PASSWORD$", key):
                found.append(f"ConfigMap/{name} {key}")
    return found


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_credentials_in_any_config_map(rendered, env):
    assert credential_findings(rendered[env]) == []


def test_credential_check_sees_a_dsn_in_a_config_map(rendered):
    objects = copy.deepcopy([o for o in rendered["dev"] if o["kind"] == "ConfigMap"][:1])
    objects[0]["data"] = {"DRIFT_DATABASE_URL": "postgresql://mlplatform:pw@mlplatform-pg-rw:5432/mlplatform"}
    assert credential_findings(objects)
    objects[0]["data"] = {"X": "host=pg password = hunter2"}
    assert credential_findings(objects)


# -- network: drift-detection -> PostgreSQL, training pods locked down ---------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_network_policies_for_postgres_and_training_pods(rendered, env):
    objects = rendered[env]
    policies = by_kind(objects, "NetworkPolicy")
    pods = pods_of(objects)
    ns = f"mlplatform-{env}"
    pg = postgres_pod(objects, env)
    job_labels = retrain_job_template(objects)["spec"]["template"]["metadata"]["labels"]
    trainer = Pod(ns, job_labels)
    mlflow = EXTERNAL_PODS["mlflow"]
    vault = EXTERNAL_PODS["vault"]
    dns = EXTERNAL_PODS["dns"]
    operator = EXTERNAL_PODS["cnpg-operator"]
    allowed = partial(flow_allowed, policies)  # allowed(src, dst, port, protocol="TCP")
    assert allowed(pods[DRIFT], pg, 5432)
    assert not allowed(pods["model-serving"], pg, 5432) and not allowed(pods["explainability"], pg, 5432)
    assert allowed(operator, pg, 8000) and allowed(operator, pg, 5432)
    assert allowed(pg, pg, 5432) and allowed(pg, dns, 53, "UDP")
    assert allowed(trainer, mlflow, 5000) and allowed(trainer, dns, 53, "UDP")
    # training rows from the feature store's offline store; Vault only where the Job logs in to it
    assert allowed(trainer, pg, 5432)
    assert allowed(trainer, vault, 8200) == (env == "prod")
    assert not allowed(trainer, pods["model-serving"], 8080)
    assert not allowed(trainer, pods["feature-store"], 8081)
    assert not allowed(pods["model-serving"], trainer, 8082) and not allowed(pods[DRIFT], trainer, 8082)


# -- the namespace can hold it ------------------------------------------------------------------


def _quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_quota_fits_services_postgres_and_one_training_job(rendered, env):
    """At the smallest scale (replicas or HPA minimum) plus every PostgreSQL instance and one Job."""
    objects = rendered[env]
    hard = by_kind(objects, "ResourceQuota")[0]["spec"]["hard"]
    hpa_min = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in by_kind(objects, "HorizontalPodAutoscaler")
    }
    used = {"requests.cpu": 0.0, "requests.memory": 0.0, "limits.cpu": 0.0, "limits.memory": 0.0}

    def add(resources: dict[str, Any], times: int) -> None:
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                used[f"{kind}.{res}"] += times * _quantity(resources[kind][res])

    for w in workloads(objects):
        replicas = hpa_min.get(w["metadata"]["name"], w["spec"].get("replicas", 1))
        for c in w["spec"]["template"]["spec"]["containers"]:
            add(c["resources"], replicas)
    cluster = find(objects, "Cluster", PG_CLUSTER)["spec"]
    add(cluster["resources"], cluster["instances"])
    add(retrain_job_template(objects)["spec"]["template"]["spec"]["containers"][0]["resources"], 1)
    for key, value in used.items():
        assert value <= _quantity(hard[key]), f"{key}: {value} > {hard[key]}"
    limit_max = by_kind(objects, "LimitRange")[0]["spec"]["limits"][0]["max"]
    job_limits = retrain_job_template(objects)["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]
    for res in ("cpu", "memory"):
        assert _quantity(job_limits[res]) <= _quantity(limit_max[res])


# -- the chart on its own -----------------------------------------------------------------------


def test_chart_with_retraining_off_renders_no_rbac_and_mode_off():
    values = ROOT / "charts" / DRIFT / "ci" / "minimal-values.yaml"
    off = _template("--values", str(values), "--set", "retrain.enabled=false")
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding")
    (deployment,) = by_kind(off, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert {v["name"] for v in pod["volumes"]} == {"data", "tmp"}
    assert config_maps(off)[DRIFT]["DRIFT_RETRAIN_MODE"] == "off"
    on = helm_template(DRIFT, [values], release=DRIFT, namespace="ci", root=ROOT)
    assert len(by_kind(on, "Role")) == 1 and validate_object(by_kind(on, "Role")[0]) == []


def test_chart_retrain_job_vault_settings():
    """retrain.vault.role overrides the role; the service's authPath/kvMount carry over only when set;
    the env backend renders no Vault setting, token volume or Vault egress for the Job."""
    vault_values = str(ROOT / "charts" / DRIFT / "ci" / "vault-values.yaml")

    def job_env(objects: list[dict[str, Any]]) -> dict[str, str | None]:
        (container,) = retrain_job_template(objects)["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    def egress_ports(objects: list[dict[str, Any]]) -> set[int]:
        policy = find(objects, "NetworkPolicy", f"{DRIFT}-retrain")
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}

    default = _template("--values", vault_values)
    assert job_env(default)["VAULT_ROLE"] == "mlplatform-prod-retrain"
    assert job_env(default)["VAULT_AUTH_PATH"] == "kubernetes" and "VAULT_KV_MOUNT" not in job_env(default)
    assert 8200 in egress_ports(default)
    custom = _template(
        "--values",
        vault_values,
        "--set",
        "retrain.vault.role=custom-retrain,secrets.vault.kvMount=kv-ml,config.environment=staging",
    )
    values = job_env(custom)
    assert (values["VAULT_ROLE"], values["VAULT_KV_MOUNT"]) == ("custom-retrain", "kv-ml")
    assert values["VAULT_SECRET_PATH"] == "mlplatform/staging/retrain"
    plain = _template("--values", str(ROOT / "charts" / DRIFT / "ci" / "default-values.yaml"))
    assert not {n for n in job_env(plain) if n.startswith("VAULT_") or n == "MLPLATFORM_SECRETS_BACKEND"}
    assert 8200 not in egress_ports(plain)
    assert not any(
        "projected" in v for v in retrain_job_template(plain)["spec"]["template"]["spec"]["volumes"]
    )


def test_chart_refuses_a_database_secret_with_vault():
    proc = run_helm_template(
        DRIFT,
        "--values",
        str(ROOT / "charts" / DRIFT / "ci" / "vault-values.yaml"),
        "--set",
        "database.existingSecret=mlplatform-pg-app",
    )
    assert proc.returncode != 0 and "DRIFT_DATABASE_URL" in proc.stderr


def _template(*args: str) -> list[dict[str, Any]]:
    proc = run_helm_template(DRIFT, "--namespace", "ci", *args)
    proc.check_returncode()
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
