"""The rendered overlays for tests, and the drift-detection pieces several tests read.

Every overlay is rendered once per process (``kubectl kustomize --enable-helm``, see
``mlplatform.deploy.render``); callers get their own deep copy, so they may mutate it::

    from tests.deploy.rendered import render_overlay, retrain_job_template, container_env
    objects = render_overlay("prod")
    job = retrain_job_template(objects)           # the batch/v1 Job drift-detection creates
    env = container_env(objects, "drift-detection")  # {"DRIFT_RETRAIN_MODE": "kubernetes", ...}

The Job template is found the way the pod finds it: ``DRIFT_RETRAIN_JOB_TEMPLATE`` names a file,
the container mounts its folder from a ConfigMap volume, and the file is that ConfigMap's key.
"""

from __future__ import annotations

import copy
import functools
import posixpath
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mlplatform.deploy.render import render_overlay as _render_overlay

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_KINDS = ("Deployment", "Rollout", "StatefulSet", "DaemonSet")
HELM = ROOT / ".venv" / "bin" / "helm"


@functools.cache
def _rendered(env: str) -> tuple[dict[str, Any], ...]:
    return tuple(_render_overlay(env, ROOT))


def render_overlay(env: str) -> list[dict[str, Any]]:
    """Every object of ``kubernetes/overlays/<env>`` (rendered once per process; a fresh copy each call)."""
    return copy.deepcopy(list(_rendered(env)))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name``; KeyError naming what is missing."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise KeyError(f"{len(found)} {kind} objects named {name!r}")
    return found[0]


def config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data."""
    return {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}


def workload(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The Deployment/Rollout/StatefulSet/DaemonSet named ``name``."""
    found = [o for o in objects if o["kind"] in WORKLOAD_KINDS and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise KeyError(f"{len(found)} workloads named {name!r}")
    return found[0]


def main_container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The first container of workload ``name`` (the service container)."""
    return workload(objects, name)["spec"]["template"]["spec"]["containers"][0]


def container_env(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The service container's environment as the pod sees it: ``envFrom`` ConfigMaps, then ``env``.

    Plain values are strings; entries with ``valueFrom`` are that dict (``secretKeyRef``,
    ``fieldRef``, ...)."""
    container = main_container(objects, name)
    maps = config_maps(objects)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        env[entry["name"]] = entry["valueFrom"] if "valueFrom" in entry else entry.get("value", "")
    return env


def retrain_job_template_text(objects: list[dict[str, Any]], name: str = "drift-detection") -> str:
    """The Job template file the drift-detection pod reads (``DRIFT_RETRAIN_JOB_TEMPLATE``), as text."""
    path = container_env(objects, name)["DRIFT_RETRAIN_JOB_TEMPLATE"]
    folder, filename = posixpath.split(path)
    pod = workload(objects, name)["spec"]["template"]["spec"]
    (mount,) = [m for m in main_container(objects, name)["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return config_maps(objects)[volume["configMap"]["name"]][filename]


def retrain_job_template(objects: list[dict[str, Any]], name: str = "drift-detection") -> dict[str, Any]:
    """The batch/v1 Job drift-detection creates (before the launcher adds the model env)."""
    return yaml.safe_load(retrain_job_template_text(objects, name))


def run_helm_template(chart: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of ``charts/<chart>`` (release named after the chart) with ``args``; the
    finished process, its exit status not checked."""
    cmd = [str(HELM), "template", chart, str(ROOT / "charts" / chart), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def helm_template_fails(chart: str, *sets: str) -> str:
    """``helm template`` of ``charts/<chart>`` with each of ``sets`` as a ``--set``: assert that helm
    refuses it and return helm's stderr (the chart's message)."""
    proc = run_helm_template(chart, *(arg for s in sets for arg in ("--set", s)))
    assert proc.returncode != 0, f"helm template accepted {sets}"
    return proc.stderr
