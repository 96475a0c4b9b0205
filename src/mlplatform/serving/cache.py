"""The pod's model cache: the downloaded artefact plus its prepared ONNX model and parity result.

A model version is prepared once per cache volume: download, native load, ONNX conversion and the
parity check run in a short-lived child process (``python -m mlplatform.serving.cache``), which
writes an *entry* next to the artefact and exits. The serving process then builds an ONNX Runtime
session from the entry and never imports scikit-learn, skops, torch, skl2onnx or mlflow for it:
their imports alone hold ~450 MB (skops' import walks every scikit-learn module, which imports torch
through scikit-learn's array-API shim) that a process cannot give back once loaded.

Layout under the cache folder::

    <name>/<version>/            the MLflow model folder as downloaded (MLmodel, model files)
    <name>/<version>.serving/    entry.json, model.onnx, check.npy

``entry.json`` holds the artefact digest (SHA-256 over the model folder's files), the ONNX file's
SHA-256, a fingerprint of what the result depends on (tolerance, runtime setting, onnxruntime and
entry format versions) and what serving needs to answer metadata (schema, outputs, defaults).
Every read re-checks both digests and the fingerprint: an entry that fails any check, or whose ONNX
file does not open, is deleted and prepared again (a corrupted artefact folder is downloaded again).
A model that stays native (no converter, or outputs outside the tolerance) gets an entry too, with
the reason, so a new pod does not convert and check it again; it is then loaded natively in the
serving process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np

from mlplatform.core.environment import apply_environment_defaults
from mlplatform.core.registry import ResolvedVersion, download_reference

log = logging.getLogger("mlplatform.serving.cache")

ENTRY_FORMAT = 1
ENTRY_SUFFIX = ".serving"
#: Longest a prepare child may run (download + conversion + check of one model).
PREPARE_TIMEOUT_S = 900.0
# One prepare child at a time per process: the pod's memory limit then covers the serving process
# plus one native model load, not one per configured model.
_PREPARE_LOCK = threading.Lock()
_CHILDREN: set[subprocess.Popen[str]] = set()


class CacheError(Exception):
    """A cache entry is missing, corrupted or stale (it is rebuilt)."""


def artefact_folder(cache_dir: Path, name: str, version: str) -> Path:
    return cache_dir / name / version


def entry_folder(cache_dir: Path, name: str, version: str) -> Path:
    return cache_dir / name / f"{version}{ENTRY_SUFFIX}"


#: MLflow's registry bookkeeping, written into a model folder by some download paths and not others
#: (name and version only): not part of the model.
_NOT_DIGESTED = frozenset({"registered_model_meta"})


def artefact_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of the model files in ``folder``, in sorted order."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _NOT_DIGESTED)
    if not files:
        raise CacheError(f"{folder} holds no files")
    for path in files:
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def fingerprint(runtime: str, tolerance: float) -> dict[str, Any]:
    """What a prepared result depends on besides the artefact itself."""
    return {
        "format": ENTRY_FORMAT,
        "runtime": runtime,
        "tolerance": tolerance,
        "onnxruntime": dist_version("onnxruntime"),
    }


@dataclass
class CacheEntry:
    """A verified entry (``onnx`` is the model bytes when ONNX Runtime serves, else ``None``)."""

    folder: Path
    meta: dict[str, Any]
    onnx: bytes | None
    check_rows: np.ndarray | None


def read_entry(cache_dir: Path, name: str, version: str, runtime: str, tolerance: float) -> CacheEntry:
    """The entry for ``name``/``version``, verified; :class:`CacheError` says why it cannot be used."""
    folder = entry_folder(cache_dir, name, version)
    try:
        meta = json.loads((folder / "entry.json").read_text())
    except FileNotFoundError:
        raise CacheError("no cache entry") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"entry.json unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint(runtime, tolerance):
        raise CacheError("entry was prepared with other settings or versions")
    artefact = artefact_folder(cache_dir, name, version)
    try:
        digest = artefact_digest(artefact)
    except (OSError, CacheError) as exc:
        raise CacheError(f"artefact folder unreadable: {exc}") from None
    if digest != meta.get("artefact_sha256"):
        raise CacheError("artefact digest differs from the one the entry was prepared from")
    onnx = None
    if meta.get("runtime") == "onnxruntime":
        try:
            onnx = (folder / "model.onnx").read_bytes()
        except OSError as exc:
            raise CacheError(f"model.onnx unreadable: {exc}") from None
        if hashlib.sha256(onnx).hexdigest() != meta.get("onnx_sha256"):
            raise CacheError("model.onnx digest differs from entry.json")
    check = None
    if (folder / "check.npy").exists():
        try:
            check = np.load(folder / "check.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CacheError(f"check.npy unreadable: {exc}") from None
    return CacheEntry(folder=folder, meta=meta, onnx=onnx, check_rows=check)


def discard(cache_dir: Path, name: str, version: str, *, artefact: bool = False) -> None:
    """Delete an entry (and the artefact folder, when it is the corrupted part)."""
    shutil.rmtree(entry_folder(cache_dir, name, version), ignore_errors=True)
    if artefact:
        shutil.rmtree(artefact_folder(cache_dir, name, version), ignore_errors=True)


def write_entry(
    cache_dir: Path,
    name: str,
    version: str,
    *,
    meta: dict[str, Any],
    onnx: bytes | None,
    check_rows: np.ndarray | None,
) -> Path:
    """Write an entry atomically (a temporary folder renamed into place)."""
    dest = entry_folder(cache_dir, name, version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-entry-", dir=dest.parent))
    try:
        meta = dict(meta)
        if onnx is not None:
            (tmp / "model.onnx").write_bytes(onnx)
            meta["onnx_sha256"] = hashlib.sha256(onnx).hexdigest()
        if check_rows is not None:
            np.save(tmp / "check.npy", check_rows, allow_pickle=False)
        (tmp / "entry.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Download (used by the prepare child and by in-process loading)
# ---------------------------------------------------------------------------------------------


def download_model(client: Any, resolved: ResolvedVersion, cache_dir: Path, tracking_uri: str) -> Path:  # noqa: ANN401
    """The model folder of ``resolved`` in the cache, downloaded when missing."""
    import mlflow.artifacts

    dest = artefact_folder(cache_dir, resolved.name, resolved.version)
    if (dest / "MLmodel").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{resolved.version}-", dir=dest.parent))
    try:
        # The storage location (file:, s3:, mlflow-artifacts:), not models:/ which would resolve
        # through MLflow's process-global registry URI.
        uri = client.get_model_version_download_uri(resolved.name, resolved.version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri
            )
        )
        if not (local / "MLmodel").exists():
            found = next(local.rglob("MLmodel"), None)
            if found is None:
                raise FileNotFoundError(f"no MLmodel file in the artifacts of {resolved.uri}")
            local = found.parent
        if dest.exists():
            shutil.rmtree(dest)
        local.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def reference_sample(client: Any, resolved: ResolvedVersion, cache_dir: Path) -> Any:  # noqa: ANN401
    """Up to 256 rows of the training reference sample (a DataFrame), or ``None`` when there is none."""
    try:
        import pandas as pd

        path = download_reference(client, resolved, cache_dir / resolved.name / f"{resolved.version}-ref")
        df = pd.read_parquet(path)
        return df.sample(n=min(256, len(df)), random_state=0) if len(df) else None
    except Exception as exc:  # noqa: BLE001 - a reference sample is optional for user models
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.info("no reference sample for %s/%s: %s", resolved.name, resolved.version, text)
        return None


# ---------------------------------------------------------------------------------------------
# Prepare: the child process
# ---------------------------------------------------------------------------------------------


def prepare(job: dict[str, Any]) -> Path:
    """Download, load natively, convert, check parity and write the entry (runs in the child)."""
    from mlplatform.core.registry import mlflow_client
    from mlplatform.serving.runtimes import OnnxRuntime, load_local_model

    resolved = ResolvedVersion(**job["resolved"])
    cache_dir = Path(job["cache_dir"])
    client = mlflow_client(job["tracking_uri"])
    folder = download_model(client, resolved, cache_dir, job["tracking_uri"])
    from mlplatform.serving.text.runtime import is_text_model

    if is_text_model(folder):  # nothing to convert: the entry says so, serving loads it with torch
        meta = {"fingerprint": fingerprint(job["runtime"], job["tolerance"]), "runtime": "torch"}
        meta |= {
            "artefact_sha256": artefact_digest(folder),
            "name": resolved.name,
            "version": resolved.version,
        }
        meta |= {
            "platform": "transformers",
            "runtime_reason": "text model: torch",
            "prepared_at": time.time(),
        }
        return write_entry(cache_dir, resolved.name, resolved.version, meta=meta, onnx=None, check_rows=None)
    model = load_local_model(
        folder,
        name=resolved.name,
        version=resolved.version,
        runtime=job["runtime"],
        tolerance=job["tolerance"],
        onnx_threads=1,
        torch_device=job["torch_device"],
        reference=reference_sample(client, resolved, cache_dir),
        keep_onnx=True,
    )
    rt = model.runtime
    onnx = rt.model_bytes if isinstance(rt, OnnxRuntime) else None
    meta: dict[str, Any] = {
        "fingerprint": fingerprint(job["runtime"], job["tolerance"]),
        "artefact_sha256": artefact_digest(folder),
        "name": resolved.name,
        "version": resolved.version,
        "platform": model.platform,
        "runtime": rt.name,
        "runtime_reason": model.runtime_reason,
        "schema": [[c.name, c.type] for c in model.schema.columns],
        # a tensor signature's one input (name, datatype, shape), or null
        "tensor": (
            [model.schema.tensor.name, model.schema.tensor.datatype, list(model.schema.tensor.shape)]
            if model.schema.tensor is not None
            else None
        ),
        "outputs": [[o.name, o.datatype] for o in model.outputs],
        "defaults": model.defaults,
        "prepared_at": time.time(),
        "prepare_seconds": model.load_seconds,
    }
    if isinstance(rt, OnnxRuntime):
        meta["onnx"] = {
            "input_dtype": np.dtype(rt.dtype).name,
            "kind": rt.kind,
            "classes": rt.classes.tolist() if rt.classes is not None else None,
            "transform": rt.transform,
        }
    return write_entry(
        cache_dir, resolved.name, resolved.version, meta=meta, onnx=onnx, check_rows=model.check_rows
    )


def run_prepare(
    *,
    tracking_uri: str,
    resolved: ResolvedVersion,
    cache_dir: Path,
    runtime: str,
    tolerance: float,
    torch_device: str,
) -> None:
    """Run :func:`prepare` in a child process; raises ``RuntimeError`` when it fails."""
    job = {
        "tracking_uri": tracking_uri,
        "resolved": {
            "name": resolved.name,
            "version": resolved.version,
            "source": resolved.source,
            "run_id": resolved.run_id,
            "tags": resolved.tags,
        },
        "cache_dir": str(cache_dir),
        "runtime": runtime,
        "tolerance": tolerance,
        "torch_device": torch_device,
    }
    with _PREPARE_LOCK:
        start = time.perf_counter()
        # the job goes over stdin, not argv: a tracking URI may carry credentials, and argv is
        # visible to every process in the pod
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.serving.cache"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _CHILDREN.add(proc)
        try:
            _, stderr = proc.communicate(json.dumps(job), timeout=PREPARE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            _CHILDREN.discard(proc)
    lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
    for line in lines[-20:] if proc.returncode == 0 else []:  # the child's warnings (e.g. random check rows)
        log.info("prepare %s/%s: %s", resolved.name, resolved.version, line[:300])
    if proc.returncode != 0:
        raise RuntimeError(
            f"preparing {resolved.name}/{resolved.version} failed: {lines[-1][:300] if lines else proc.returncode}"
        )
    log.info(
        "prepared %s/%s in a child process in %.1f s",
        resolved.name,
        resolved.version,
        time.perf_counter() - start,
        extra={"model": resolved.name, "version": resolved.version},
    )


def terminate_children() -> None:
    """Stop prepare children still running (the server is shutting down)."""
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.kill()


def main() -> int:
    """Prepare the job read as JSON from stdin (see :func:`run_prepare`)."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    apply_environment_defaults()  # this child is a process start-up of its own
    try:
        prepare(json.loads(sys.stdin.read()))
    except Exception as exc:  # noqa: BLE001 - one line for the parent, which logs and retries
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"{type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
