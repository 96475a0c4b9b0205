"""model-serving's batch scoring CronJob (batchScore.*): off by default and in every overlay; when on,
the rendered manifest runs `mlplatform batch-score` with arguments the CLI accepts, reads the feature
store's offline store through a secretKeyRef, logs to drift detection, mounts the claim, is
restricted, passes every Gatekeeper policy, and has its own NetworkPolicy."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import typer.main

from mlplatform.cli import app
from mlplatform.deploy.render import ENVIRONMENTS, helm_template
from tests.deploy.conftest import ROOT
from tests.deploy.rendered import find, helm_template_fails
from tests.policies.gatekeeper import load_policies, matches

CHART = "model-serving"
CRONJOB = "model-serving-batch-score"
ON = """
batchScore:
  enabled: true
  existingClaim: batch-data
  featureDatabase:
    existingSecret: mlplatform-pg-app
    key: uri
networkPolicy:
  enabled: true
"""


@pytest.fixture(scope="module")
def enabled(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = tmp_path_factory.mktemp("batch") / "values.yaml"
    values.write_text(ON)
    return helm_template(CHART, [values], root=ROOT)


def _render(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    values = tmp_path / "values.yaml"
    values.write_text(text)
    return helm_template(CHART, [values], root=ROOT)


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_off_by_default_and_in_every_overlay(rendered):
    assert not [o for o in helm_template(CHART, root=ROOT) if o["kind"] == "CronJob"]
    for env in ENVIRONMENTS:
        assert not [o for o in rendered[env] if o["metadata"]["name"] == CRONJOB], env


def test_cronjob_runs_batch_score_with_arguments_the_cli_accepts(enabled):
    cronjob = find(enabled, "CronJob", CRONJOB)
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["timeZone"] == "Etc/UTC"
    pod = _pod(cronjob)
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "batch-score"
    assert args[args.index("--model") + 1] == "fraud-detector"
    assert args[args.index("--alias") + 1] == "champion" and "--version" not in args
    assert args[args.index("--entities") + 1] == "/batch/entities/latest.parquet"
    assert args[args.index("--out") + 1] == "/batch/scores/{run}.parquet"
    # the real CLI parses the rendered arguments (no run: parsing only)
    command = typer.main.get_command(app)
    sub = command.get_command(None, "batch-score")  # type: ignore[attr-defined]
    ctx = sub.make_context("batch-score", list(args[1:]))
    assert ctx.params["model"] == "fraud-detector" and str(ctx.params["out"]).endswith("{run}.parquet")

    env = {e["name"]: e for e in container["env"]}
    assert env["FEATURES_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlplatform-pg-app",
        "key": "uri",
    }
    serving_cm = find(enabled, "ConfigMap", CHART)["data"]
    assert env["BATCH_DRIFT_URL"]["value"] == serving_cm["SERVING_DRIFT_URL"]
    assert container["envFrom"] == [{"configMapRef": {"name": CHART}}]  # MLFLOW_TRACKING_URI and the rest
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/batch"]]["persistentVolumeClaim"] == {"claimName": "batch-data"}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "batch-score"
    # never selected by the serving Service (its selector includes the release's instance)
    service = find(enabled, "Service", CHART)
    assert any(labels.get(k) != v for k, v in service["spec"]["selector"].items())


def test_enabled_chart_lints_and_validates_against_the_kubernetes_schemas(tmp_path):
    from mlplatform.deploy.render import helm_lint
    from tests.deploy.k8s import validate_object

    values = tmp_path / "values.yaml"
    values.write_text(ON)
    helm_lint(CHART, [values], root=ROOT)
    objects = helm_template(CHART, [values], release=CHART, namespace="ci", root=ROOT)
    batch = [o for o in objects if o["metadata"]["name"] == CRONJOB]
    assert sorted(o["kind"] for o in batch) == ["CronJob", "NetworkPolicy"]
    assert [e for obj in batch for e in validate_object(obj)] == []


def test_cronjob_and_its_pod_pass_every_gatekeeper_policy(enabled):
    cronjob = find(enabled, "CronJob", CRONJOB)
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": f"{CRONJOB}-1-abcde", "namespace": "mlplatform"},
        "spec": template["spec"],
    }
    for obj in (cronjob, pod):
        obj["metadata"].setdefault("namespace", "mlplatform")
        ran, denied = set(), []
        for policy in load_policies():
            if matches(policy.constraint["spec"]["match"], obj):
                ran.add(policy.name)
                params = policy.constraint["spec"].get("parameters", {})
                denied += [f"[{policy.name}] {v['msg']}" for v in policy.violations(obj, params)]
        assert denied == [], f"{obj['kind']}: {denied}"
        assert {"k8spodsecurity", "k8scontainerresources", "k8srequiredlabels"} <= ran


def test_network_policy_of_the_batch_pods(enabled):
    policy = find(enabled, "NetworkPolicy", CRONJOB)
    labels = find(enabled, "CronJob", CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert all(labels[k] == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("ingress")
    ports = sorted({p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]})
    assert ports == [53, 5000, 5432, 8082]  # DNS, MLflow, the offline store, drift-detection
    # the serving pods' own policy is unchanged: no PostgreSQL
    serving = find(enabled, "NetworkPolicy", CHART)
    assert 5432 not in {p["port"] for rule in serving["spec"]["egress"] for p in rule.get("ports", [])}


def test_version_instead_of_alias(tmp_path):
    objects = _render(
        tmp_path, ON.replace("  enabled: true\n", "  enabled: true\n  version: '7'\n  alias: ''\n", 1)
    )
    args = _pod(find(objects, "CronJob", CRONJOB))["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "7" and "--alias" not in args


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (
            ["batchScore.enabled=true", "batchScore.featureDatabase.existingSecret=pg"],
            "batchScore.existingClaim",
        ),
        (
            ["batchScore.enabled=true", "batchScore.existingClaim=c"],
            "batchScore.featureDatabase.existingSecret",
        ),
        (
            [
                "batchScore.enabled=true",
                "batchScore.existingClaim=c",
                "batchScore.featureDatabase.existingSecret=pg",
                "batchScore.version=3",
            ],
            "set version or alias, not both",
        ),
        (
            [
                "batchScore.enabled=true",
                "batchScore.existingClaim=c",
                "batchScore.featureDatabase.existingSecret=pg",
                "secrets.backend=vault",
                "secrets.vault.addr=https://vault:8200",
                "secrets.vault.role=r",
            ],
            "batchScore.enabled needs secrets.backend env",
        ),
        (["batchScore.schedule=nightly"], "schedule"),
        (
            [
                "batchScore.enabled=true",
                "batchScore.existingClaim=c",
                "batchScore.featureDatabase.existingSecret=pg",
                "networkPolicy.enabled=true",
                "batchScore.egress={nowhere}",
            ],
            "batchScore.egress: nowhere is not a key of networkPolicy.egress",
        ),
    ],
)
def test_chart_refuses_inconsistent_batch_values(sets, needle):
    assert needle in helm_template_fails(CHART, *sets)


def test_network_flows_of_the_batch_pods_in_staging(rendered, tmp_path):
    """Staging's policies (its PostgreSQL policy included) plus the batch pods' own, as they would be
    with batchScore on: the Job reaches the offline store, MLflow and drift-detection, nothing else."""
    from tests.deploy.k8s import EXTERNAL_PODS, Pod, by_kind, flow_allowed, pods_of, postgres_pod

    objects = rendered["staging"]
    values = [ROOT / "kubernetes/overlays/staging/values" / f for f in ("common.yaml", "model-serving.yaml")]
    on = tmp_path / "on.yaml"
    on.write_text(ON)
    chart = helm_template(CHART, [*values, on], namespace="mlplatform-staging", root=ROOT)
    batch_policy = find(chart, "NetworkPolicy", CRONJOB)
    batch_policy["metadata"]["namespace"] = "mlplatform-staging"  # kustomize sets it in an overlay
    policies = by_kind(objects, "NetworkPolicy") + [batch_policy]
    template = find(chart, "CronJob", CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]
    job = Pod("mlplatform-staging", template["metadata"]["labels"])
    pods = pods_of(objects)
    pg = postgres_pod(objects, "staging")
    allowed = partial(flow_allowed, policies)  # allowed(src, dst, port, protocol="TCP")
    assert allowed(job, pg, 5432) and allowed(job, pods["drift-detection"], 8082)
    assert allowed(job, EXTERNAL_PODS["mlflow"], 5000) and allowed(job, EXTERNAL_PODS["dns"], 53, "UDP")
    assert not allowed(job, pods["feature-store"], 8081) and not allowed(job, EXTERNAL_PODS["redis"], 6379)
    # the serving pods themselves still cannot reach PostgreSQL, and nothing reaches the Job
    assert not allowed(pods["model-serving"], pg, 5432)
    assert not allowed(pods["model-serving"], job, 8080)
