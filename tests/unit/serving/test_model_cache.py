"""The pod's model cache (serving/cache.py): prepared once in a child process, served from the entry
without the heavy imports, and a corrupted or stale entry is detected and rebuilt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlplatform.core.registry import mlflow_client, parse_model_ref, resolve_version
from mlplatform.serving import cache
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.repository import ModelRepository
from tests.unit.serving.registry_models import FEATURES, FOREST, HGB
from tests.unit.serving.support import make_settings


def _repository(reg, tmp_path, *, private: bool = False) -> ModelRepository:
    """A repository on the serving tests' shared cache (entries other tests prepared are reused), or
    on a private one under ``tmp_path``."""
    from prometheus_client import CollectorRegistry

    kw = {"model_cache_dir": tmp_path / "cache"} if private else {}
    return ModelRepository(make_settings(reg, tmp_path, **kw), ServingMetrics(CollectorRegistry()))


def _load(repo: ModelRepository, name: str):  # noqa: ANN202
    ref = parse_model_ref(name)
    return repo._load(repo._resolve(ref), ref)


@pytest.fixture(scope="module")
def prepared(serving_registry, tmp_path_factory):
    """The forest from the shared cache (prepared by a child process on the first load)."""
    repo = _repository(serving_registry, tmp_path_factory.mktemp("prepared"))
    model = _load(repo, FOREST)
    return repo, model


def test_first_load_writes_an_entry_that_serves_onnx(prepared):
    repo, model = prepared
    cache_dir = repo.settings.resolved_cache_dir()
    entry = cache.read_entry(cache_dir, FOREST, model.version, "auto", repo.settings.onnx_tolerance)
    assert entry.meta["runtime"] == "onnxruntime" and entry.onnx
    assert entry.meta["artefact_sha256"] == cache.artefact_digest(
        cache.artefact_folder(cache_dir, FOREST, "1")
    )
    assert model.runtime.name == "onnxruntime" and model.native is None
    assert [c for c, _ in entry.meta["schema"]] == FEATURES


def test_served_from_the_entry_without_sklearn_mlflow_or_torch(prepared, serving_registry):
    """A fresh process builds the model from the entry alone; its outputs match the native forest."""
    repo, model = prepared
    cache_dir = repo.settings.resolved_cache_dir()
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from mlplatform.serving import cache
        from mlplatform.v2.codec import Frame
        from mlplatform.serving.runtimes import load_prepared
        entry = cache.read_entry(Path({str(cache_dir)!r}), {FOREST!r}, "1", "auto", {repo.settings.onnx_tolerance!r})
        m = load_prepared(entry, name={FOREST!r}, version="1")
        out = m.predict(Frame(matrix=entry.check_rows, columns={{}}, n_rows=len(entry.check_rows)))
        heavy = sorted({{n.split(".")[0] for n in sys.modules}} & {{"sklearn", "mlflow", "torch", "skl2onnx", "skops", "pandas"}})
        print(json.dumps({{"p": out.outputs["probability"].tolist(), "heavy": heavy, "rows": entry.check_rows.tolist()}}))
        """
    )
    out = json.loads(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    )
    assert out["heavy"] == []
    import mlflow.sklearn
    import pandas as pd

    forest = mlflow.sklearn.load_model(str(cache.artefact_folder(cache_dir, FOREST, "1")))
    rows = pd.DataFrame(np.asarray(out["rows"]), columns=FEATURES).astype(
        {"hour": np.int64, "tx_count_24h": np.int64, "is_foreign": bool}
    )
    np.testing.assert_allclose(out["p"], forest.predict_proba(rows)[:, 1], atol=1e-4)


def _corrupt_onnx(cache_dir):  # noqa: ANN001, ANN202
    path = cache.entry_folder(cache_dir, FOREST, "1") / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_json(cache_dir):  # noqa: ANN001, ANN202
    path = cache.entry_folder(cache_dir, FOREST, "1") / "entry.json"
    path.write_text(path.read_text()[:40])


def _corrupt_artefact(cache_dir):  # noqa: ANN001, ANN202
    folder = cache.artefact_folder(cache_dir, FOREST, "1")
    model_file = next(p for p in folder.iterdir() if p.name.startswith("model."))
    model_file.write_bytes(model_file.read_bytes()[:-100])


@pytest.mark.parametrize(
    "corrupt", [_corrupt_onnx, _corrupt_json, _corrupt_artefact], ids=lambda f: f.__name__
)
def test_a_corrupted_entry_is_detected_and_rebuilt(prepared, serving_registry, tmp_path, corrupt, caplog):
    shared, first = prepared
    repo = _repository(serving_registry, tmp_path, private=True)
    cache_dir = repo.settings.resolved_cache_dir()
    for folder in (cache.artefact_folder, cache.entry_folder):  # a private copy of the good entry
        shutil.copytree(
            folder(shared.settings.resolved_cache_dir(), FOREST, "1"), folder(cache_dir, FOREST, "1")
        )
    digest = cache.artefact_digest(cache.artefact_folder(cache_dir, FOREST, "1"))
    before = json.loads((cache.entry_folder(cache_dir, FOREST, "1") / "entry.json").read_text())
    corrupt(cache_dir)
    with pytest.raises(cache.CacheError):
        cache.read_entry(cache_dir, FOREST, "1", "auto", repo.settings.onnx_tolerance)
    caplog.set_level("WARNING", logger="mlplatform.serving.repository")
    again = _load(repo, FOREST)
    assert "discarded" in caplog.text
    after = cache.read_entry(cache_dir, FOREST, "1", "auto", repo.settings.onnx_tolerance)
    assert after.meta["prepared_at"] > before["prepared_at"]  # prepared again, not patched
    assert after.meta["artefact_sha256"] == digest  # a corrupted artefact was downloaded again
    assert again.runtime.name == first.runtime.name == "onnxruntime"
    x = after.check_rows[:16]
    from mlplatform.v2.codec import Frame

    frame = Frame(matrix=x, columns={}, n_rows=len(x))
    np.testing.assert_allclose(
        again.predict(frame).outputs["probability"], first.predict(frame).outputs["probability"]
    )


def test_other_settings_prepare_again(prepared, serving_registry, tmp_path):
    """The entry is keyed by its settings too: another tolerance does not reuse the old parity result."""
    repo, _ = prepared
    cache_dir = repo.settings.resolved_cache_dir()
    with pytest.raises(cache.CacheError, match="other settings"):
        cache.read_entry(cache_dir, FOREST, "1", "auto", 1e-3)


def test_a_native_result_is_cached_with_its_reason(serving_registry, tmp_path):
    repo = _repository(serving_registry, tmp_path)
    model = _load(repo, HGB)
    entry = cache.read_entry(repo.settings.resolved_cache_dir(), HGB, model.version, "auto", 1e-4)
    assert entry.meta["runtime"] == "sklearn" and entry.onnx is None
    assert "ONNX conversion failed" in entry.meta["runtime_reason"] == model.runtime_reason
    assert not (entry.folder / "model.onnx").exists()


def test_prepare_failure_falls_back_to_loading_in_process(serving_registry, tmp_path, monkeypatch, caplog):
    """A prepare child that fails (here: it cannot start) costs memory, not availability."""
    monkeypatch.setattr(cache.sys, "executable", str(tmp_path / "no-such-python"))
    repo = _repository(serving_registry, tmp_path, private=True)
    caplog.set_level("WARNING", logger="mlplatform.serving.repository")
    model = _load(repo, FOREST)
    assert model.runtime.name == "onnxruntime" and "in this process" in caplog.text
    assert not cache.entry_folder(repo.settings.resolved_cache_dir(), FOREST, "1").exists()


def test_registry_client_is_rest_for_a_tracking_server(serving_registry):
    from mlplatform.core.registry import RestRegistryClient, registry_client

    assert isinstance(registry_client("http://mlflow.example:5000"), RestRegistryClient)
    assert not isinstance(registry_client(serving_registry.uri), RestRegistryClient)
    assert resolve_version(mlflow_client(serving_registry.uri), parse_model_ref(FOREST)).version == "1"


def test_the_prepare_job_is_not_on_the_command_line(monkeypatch, tmp_path):
    """argv is visible to every process in the pod; the job (tracking URI included) goes over stdin."""
    from mlplatform.core.registry import ResolvedVersion

    seen = {}

    class RecordingPopen:
        returncode = 1

        def __init__(self, args, **kw):
            seen["args"] = args

        def communicate(self, input=None, timeout=None):  # noqa: A002 - Popen's own name
            seen["input"] = input
            return "", "RuntimeError: stopped here"

        def poll(self):
            return 1

    monkeypatch.setattr(cache.subprocess, "Popen", RecordingPopen)
    resolved = ResolvedVersion(name="m", version="1", source="s", run_id=None, tags={})
    with pytest.raises(RuntimeError, match="stopped here"):
        cache.run_prepare(
            tracking_uri="https://user:s3cret@mlflow.example",
            resolved=resolved,
            cache_dir=tmp_path,
            runtime="auto",
            tolerance=1e-4,
            torch_device="cpu",
        )
    assert "s3cret" not in " ".join(seen["args"])
    assert json.loads(seen["input"])["tracking_uri"] == "https://user:s3cret@mlflow.example"
