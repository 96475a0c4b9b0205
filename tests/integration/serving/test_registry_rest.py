"""RestRegistryClient (what serving resolves with when MLFLOW_TRACKING_URI is an http(s) server) against a
real ``mlflow server``: the same ResolvedVersion as MlflowClient for every reference, NotFound where
MlflowClient's answer is "does not exist", and MLflow's credential variables on the wire."""

from __future__ import annotations

import base64

import httpx
import pytest

from mlplatform.core.errors import NotFound
from mlplatform.core.registry import RestRegistryClient, mlflow_client, parse_model_ref, resolve_version
from tests.faults.registry import MlflowServer
from tests.procs import free_port
from tests.unit.serving.registry_models import FOREST, MLP, shared_registry

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reg = shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")
    srv = MlflowServer(reg.uri, free_port(), tmp_path_factory.mktemp("mlflow-rest"))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("spec", [FOREST, f"{FOREST}@champion", f"{FOREST}/1", f"{MLP}@champion"])
def test_rest_and_mlflow_client_resolve_alike(server, spec):
    ref = parse_model_ref(spec)
    rest = resolve_version(RestRegistryClient(server.url), ref)
    native = resolve_version(mlflow_client(server.url), ref)
    assert rest == native
    assert rest.tags.get("mlplatform.reference_artifact") or rest.run_id


@pytest.mark.parametrize("spec", ["no-such-model", f"{FOREST}/99", f"{FOREST}@no-such-alias"])
def test_missing_is_not_found_for_both(server, spec):
    ref = parse_model_ref(spec)
    with pytest.raises(NotFound):
        resolve_version(RestRegistryClient(server.url), ref)
    with pytest.raises(NotFound):
        resolve_version(mlflow_client(server.url), ref)


def test_unreachable_registry_is_an_error_not_a_missing_model():
    with pytest.raises(httpx.HTTPError):
        resolve_version(RestRegistryClient(f"http://127.0.0.1:{free_port()}"), parse_model_ref(FOREST))


@pytest.mark.parametrize(
    "env, header",
    [
        ({"MLFLOW_TRACKING_TOKEN": "tok"}, "Bearer tok"),
        (
            {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p:w"},
            "Basic " + base64.b64encode(b"u:p:w").decode(),
        ),
        ({}, None),
    ],
)
def test_credentials_follow_mlflows_variables(monkeypatch, env, header):
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"model_version": {"name": "m", "version": "3", "source": "s", "run_id": "r", "tags": []}},
        )

    client = RestRegistryClient("http://mlflow.test", transport=httpx.MockTransport(handler))
    assert resolve_version(client, parse_model_ref("m@champion")).version == "3"
    assert seen[0].url.path == "/api/2.0/mlflow/registered-models/alias"
    assert seen[0].url.params["alias"] == "champion"
    assert seen[0].headers.get("authorization") == header


def test_serving_runs_with_only_what_its_image_installs(server, tmp_path):
    """The serving image installs the base dependencies plus the ``serving`` extra only. A process that
    does what a serving pod does (CLI and app imports, the prepare step for the forest and the torch
    MLP against an MLflow server, ONNX Runtime from the entries) works on a site-packages holding only
    those distributions (``python -S``), as in the image: optional imports of others fall back."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.dist_closure import ROOT, closure, project_requirements, site_view

    site = site_view(closure(project_requirements("serving")), tmp_path / "site-packages")
    assert not any((site / m).exists() for m in ("feast", "evidently", "shap", "sqlalchemy", "kubernetes"))
    code = textwrap.dedent(
        f"""
        import os, sys
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
        import mlplatform.cli, mlplatform.serving.app
        from mlplatform.core.registry import RestRegistryClient, parse_model_ref, resolve_version
        from mlplatform.serving import cache
        from mlplatform.serving.runtimes import load_prepared
        for name in ({FOREST!r}, {MLP!r}):
            rv = resolve_version(RestRegistryClient({server.url!r}), parse_model_ref(name))
            job = {{"tracking_uri": {server.url!r}, "cache_dir": {str(tmp_path / "cache")!r}, "runtime": "auto",
                   "tolerance": 1e-4, "torch_device": "cpu",
                   "resolved": {{"name": rv.name, "version": rv.version, "source": rv.source,
                                "run_id": rv.run_id, "tags": rv.tags}}}}
            cache.prepare(job)
            entry = cache.read_entry(cache.Path({str(tmp_path / "cache")!r}), name, rv.version, "auto", 1e-4)
            print(name, load_prepared(entry, name=name, version=rv.version).runtime.name)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = f"{site}:{ROOT / 'src'}"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [FOREST, "onnxruntime", MLP, "onnxruntime"], out.stdout
