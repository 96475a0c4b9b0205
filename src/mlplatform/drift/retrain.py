"""Start retraining: a Kubernetes batch/v1 Job in a cluster, ``mlplatform retrain`` as a subprocess locally.

The Job is created with the official ``kubernetes`` client (in-cluster config unless
``DRIFT_KUBE_API_URL`` is set) from a YAML template (``DRIFT_RETRAIN_JOB_TEMPLATE``) or a built-in one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from mlplatform.drift.settings import DriftSettings
from mlplatform.drift.store import RetrainState

log = logging.getLogger("mlplatform.drift.retrain")


@dataclass
class TriggerOutcome:
    """What happened when retraining was started."""

    mode: str
    outcome: str  # "started" | "failed" | "skipped"
    detail: str


def episode_step(state: RetrainState, consecutive: int, after: int, cooldown_s: float, now: float) -> bool:
    """The episode rule of every retraining trigger: set the run length of bad windows, and say whether
    retraining fires now.

    A run of ``consecutive`` bad windows fires once it reaches ``after`` and no trigger of the same
    episode fired yet (and the last trigger is ``cooldown_s`` old); a good window (``consecutive`` 0)
    ends the episode, so the next run may fire again. Drift windows and performance windows (realized
    performance below the reference) use it alike, each with its own state.
    """
    state.consecutive = consecutive
    if consecutive == 0:
        state.episode_active = False
        return False
    due = consecutive >= after and not state.episode_active
    cooled = state.last_trigger is None or now - state.last_trigger >= cooldown_s
    if due and cooled:
        state.episode_active = True
        state.last_trigger = now
        return True
    return False


def default_job_template(settings: DriftSettings) -> dict[str, Any]:
    """The built-in training Job: ``mlplatform retrain`` (champion/challenger gate) in the platform image.

    The charts mount a complete template instead (``DRIFT_RETRAIN_JOB_TEMPLATE``: registry, feature
    store, pod security, resources); this one is the fallback for a bare ``retrain_mode=kubernetes``.
    """
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "mlplatform-retrain-", "labels": {"app.kubernetes.io/name": "retrain"}},
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "retrain"}},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "train",
                            "image": settings.retrain_image,
                            "command": ["mlplatform", "retrain"],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def build_job(settings: DriftSettings, model: str, version: str, reason: str) -> dict[str, Any]:
    """The Job manifest for one trigger: the template plus labels and env naming the model."""
    if settings.retrain_job_template is not None:
        job = yaml.safe_load(settings.retrain_job_template.read_text())
    else:
        job = default_job_template(settings)
    job = copy.deepcopy(job)
    meta = job.setdefault("metadata", {})
    if "name" not in meta:
        meta.setdefault("generateName", "mlplatform-retrain-")
    labels = meta.setdefault("labels", {})
    labels["mlplatform.io/model"] = model
    labels["mlplatform.io/model-version"] = version
    meta.setdefault("annotations", {})["mlplatform.io/retrain-reason"] = reason[:200]
    for container in job["spec"]["template"]["spec"].get("containers", []):
        env = container.setdefault("env", [])
        env.append({"name": "MLPLATFORM_RETRAIN_MODEL", "value": model})
        env.append({"name": "MLPLATFORM_RETRAIN_FROM_VERSION", "value": version})
    return job


def resolve_mode(settings: DriftSettings) -> str:
    """'auto' becomes kubernetes inside a cluster, subprocess elsewhere."""
    if settings.retrain_mode != "auto":
        return settings.retrain_mode
    if settings.kube_api_url or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    return "subprocess"


class RetrainLauncher:
    """Starts one retraining run per call; never raises (the outcome says what happened)."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.mode = resolve_mode(settings)
        self._children: set[asyncio.Task[None]] = set()

    async def launch(self, model: str, version: str, reason: str) -> TriggerOutcome:
        try:
            if self.mode == "off":
                return TriggerOutcome("off", "skipped", "retrain_mode is 'off'; nothing started")
            if self.mode == "kubernetes":
                name = await asyncio.to_thread(self._create_job, model, version, reason)
                return TriggerOutcome(
                    "kubernetes", "started", f"job {self.settings.retrain_namespace}/{name}"
                )
            return await self._spawn(model, version)
        except Exception as exc:  # noqa: BLE001 - reported as a failed trigger, logged with detail
            log.exception("starting retraining of %s failed", model)
            return TriggerOutcome(self.mode, "failed", f"{type(exc).__name__}: {exc}"[:500])

    def _create_job(self, model: str, version: str, reason: str) -> str:
        from kubernetes import client, config

        cfg = client.Configuration()
        if self.settings.kube_api_url:
            cfg.host = self.settings.kube_api_url
            if self.settings.kube_token:
                cfg.api_key = {"authorization": self.settings.kube_token}
                cfg.api_key_prefix = {"authorization": "Bearer"}
        else:
            config.load_incluster_config(client_configuration=cfg)
        body = build_job(self.settings, model, version, reason)
        with client.ApiClient(cfg) as api:
            created = client.BatchV1Api(api).create_namespaced_job(
                self.settings.retrain_namespace, body, _request_timeout=10
            )
        return str(created.metadata.name)

    async def _spawn(self, model: str, version: str) -> TriggerOutcome:
        argv = shlex.split(self.settings.retrain_command)
        env = {**os.environ, "MLPLATFORM_RETRAIN_MODEL": model, "MLPLATFORM_RETRAIN_FROM_VERSION": version}
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )

        async def _wait() -> None:
            code = await proc.wait()
            level = logging.INFO if code == 0 else logging.ERROR
            log.log(level, "retraining of %s exited with %s", model, code)

        task = asyncio.create_task(_wait())
        self._children.add(task)
        task.add_done_callback(self._children.discard)
        return TriggerOutcome("subprocess", "started", f"pid {proc.pid}: {' '.join(argv)}"[:500])

    async def aclose(self) -> None:
        for task in list(self._children):
            task.cancel()
