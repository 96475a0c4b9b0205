"""Model runtimes: native scikit-learn, native torch, and the compiled ONNX Runtime fast path.

A :class:`LoadedModel` is built from a local MLflow model folder by :func:`load_local_model`: the
flavor decides the native loader (``mlflow.sklearn`` / ``mlflow.pytorch``), the signature gives the
input schema, and the input example plus the training reference rows are the check rows. When
conversion to ONNX succeeds (skl2onnx for scikit-learn, ``torch.onnx.export`` for torch) and the
ONNX outputs match the native outputs on the check rows within a tolerance, ONNX Runtime serves
the model; otherwise the native model does and the reason is kept (and shown in model metadata).
"""

from __future__ import annotations

import io
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlplatform.v2.codec import Frame
from mlplatform.v2.schema import (
    ColumnSpec,
    InputSchema,
    TensorInput,
    UnsupportedModel,
    schema_from_signature,
)
from mlplatform.v2.types import MetadataTensor

log = logging.getLogger("mlplatform.serving.runtimes")

PROBABILITY = "probability"
LABEL = "label"
PREDICTION = "prediction"


@dataclass(slots=True)
class Prediction:
    """Model outputs for a batch: output name -> 1-D array with one value per row."""

    outputs: dict[str, np.ndarray]

    def slice(self, start: int, stop: int) -> Prediction:
        return Prediction({k: v[start:stop] for k, v in self.outputs.items()})

    @staticmethod
    def concat(parts: list[Prediction]) -> Prediction:
        keys = parts[0].outputs.keys()
        return Prediction({k: np.concatenate([p.outputs[k] for p in parts]) for k in keys})


class Runtime(Protocol):
    """Something that turns a frame into outputs."""

    name: str
    inline: bool  # cheap enough to run on the event loop

    def predict(self, frame: Frame) -> Prediction: ...


# ---------------------------------------------------------------------------------------------
# Native runtimes
# ---------------------------------------------------------------------------------------------


def _dataframe(frame: Frame, schema: InputSchema):  # noqa: ANN202
    import pandas as pd

    if frame.matrix is not None:
        # a gRPC request's raw contents arrive as a read-only view of the message: copy those, so a model
        # that edits its input frame in place works as it does over REST
        df = pd.DataFrame(frame.matrix, columns=schema.names, copy=not frame.matrix.flags.writeable)
    else:
        df = pd.DataFrame(frame.columns)
    for c in schema.columns:
        if c.type in ("long", "integer"):
            df[c.name] = df[c.name].astype(np.int64)
        elif c.type == "boolean":
            df[c.name] = df[c.name].astype(bool)
        elif c.type == "float":
            df[c.name] = df[c.name].astype(np.float32)
    return df


class SklearnRuntime:
    """A scikit-learn estimator called directly (DataFrame input when it was fitted on one)."""

    name = "sklearn"
    inline = False

    def __init__(self, model: Any, schema: InputSchema) -> None:
        self.model = model
        self.schema = schema
        self.by_name = hasattr(model, "feature_names_in_") or not schema.numeric
        self.classifier = hasattr(model, "predict_proba")
        classes = getattr(model, "classes_", None)
        self.classes = np.asarray(classes) if classes is not None else None

    def _input(self, frame: Frame) -> Any:
        if self.by_name:
            return _dataframe(frame, self.schema)
        return frame.matrix

    def predict(self, frame: Frame) -> Prediction:
        x = self._input(frame)
        if not self.classifier:
            return Prediction({PREDICTION: np.asarray(self.model.predict(x), dtype=np.float64).reshape(-1)})
        proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        return _classifier_outputs(proba, self.classes)


def _classifier_outputs(proba: np.ndarray, classes: np.ndarray | None) -> Prediction:
    idx = proba.argmax(axis=1)
    p = proba[:, 1] if proba.shape[1] == 2 else proba[np.arange(len(idx)), idx]
    label = classes[idx] if classes is not None else idx
    if label.dtype.kind in "iub":
        label = label.astype(np.int64)
    return Prediction({PROBABILITY: np.ascontiguousarray(p, dtype=np.float64), LABEL: label})


def _to_probability(raw: np.ndarray, transform: str) -> np.ndarray:
    raw = raw.astype(np.float64, copy=False)
    if raw.ndim == 2 and raw.shape[1] == 2:
        if transform == "softmax":
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            raw = e / e.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(raw[:, 1])
    p = raw.reshape(-1)
    if transform == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-p))
    return p


def _binary_outputs(p: np.ndarray) -> Prediction:
    return Prediction({PROBABILITY: p, LABEL: (p >= 0.5).astype(np.int64)})


class TorchRuntime:
    """A torch module in eval mode on CPU or CUDA; one output (probability or logit) per row."""

    name = "torch"
    inline = False

    def __init__(self, model: Any, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.model = model.to(device).eval()
        self.transform = "none"

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).to(self.device)
            out = self.model(x)
            if isinstance(out, tuple | list):
                out = out[0]
            return out.detach().float().cpu().numpy()

    def predict(self, frame: Frame) -> Prediction:
        assert frame.matrix is not None
        return _binary_outputs(_to_probability(self.raw(frame.matrix), self.transform))


def _choose_transform(raw: np.ndarray) -> str:
    """How a torch output becomes a probability: as is, sigmoid (logits) or softmax (2 logits)."""
    if raw.ndim == 2 and raw.shape[1] == 2:
        ok = (raw >= 0).all() and (raw <= 1).all() and np.allclose(raw.sum(axis=1), 1.0, atol=1e-4)
        return "none" if ok else "softmax"
    if raw.ndim == 2 and raw.shape[1] != 1:
        raise UnsupportedModel(f"torch model returns {raw.shape[1]} values per row; serving needs 1 or 2")
    return "none" if ((raw >= 0) & (raw <= 1)).all() else "sigmoid"


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------


class OnnxRuntime:
    """An ONNX Runtime session with one intra-op thread, fed the float matrix directly."""

    name = "onnxruntime"
    inline = True

    def __init__(
        self,
        model_bytes: bytes,
        *,
        threads: int,
        input_dtype: type,
        kind: str,
        classes: np.ndarray | None = None,
        transform: str = "none",
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        # kept only while a cache entry is written from it (load_local_model(keep_onnx=True))
        self.model_bytes: bytes | None = model_bytes
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.dtype = input_dtype
        self.kind = kind  # sklearn-classifier | sklearn-regressor | torch
        self.classes = classes
        self.transform = transform
        if kind == "sklearn-classifier":
            self._proba = "probabilities" if "probabilities" in self.output_names else self.output_names[-1]
            self._fetch = [self._proba]
        else:
            self._fetch = [self.output_names[0]]

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        x = matrix if matrix.dtype == self.dtype else matrix.astype(self.dtype)
        return self.session.run(self._fetch, {self.input_name: x})[0]

    def predict(self, frame: Frame) -> Prediction:
        assert frame.matrix is not None
        out = self.raw(frame.matrix)
        if self.kind == "sklearn-classifier":
            return _classifier_outputs(np.asarray(out, dtype=np.float64), self.classes)
        if self.kind == "sklearn-regressor":
            return Prediction({PREDICTION: np.asarray(out, dtype=np.float64).reshape(-1)})
        return _binary_outputs(_to_probability(out, self.transform))


def _sklearn_to_onnx(model: Any, n_features: int) -> tuple[bytes, type]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    errors = []
    for tensor_type, dtype in ((DoubleTensorType, np.float64), (FloatTensorType, np.float32)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onx = convert_sklearn(
                    model, initial_types=[("input", tensor_type([None, n_features]))], options=options
                )
            return onx.SerializeToString(), dtype
        except Exception as exc:  # noqa: BLE001 - any converter failure means "stay native"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(f"{tensor_type.__name__}: {first[:120]}")
    raise RuntimeError("skl2onnx conversion failed (" + "; ".join(errors) + ")")


def _torch_to_onnx(model: Any, n_features: int) -> bytes:
    import torch

    buf = io.BytesIO()
    cpu_model = model.to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu_model,
            (torch.zeros(2, n_features, dtype=torch.float32),),
            buf,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Loading a model folder
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model ready to predict, plus everything metadata and checks need."""

    name: str
    version: str
    platform: str  # sklearn | pytorch
    schema: InputSchema
    runtime: Runtime
    outputs: list[MetadataTensor]
    check_rows: np.ndarray | None
    runtime_reason: str
    feature_service: str | None = None
    entity_keys: tuple[str, ...] = ()  # of the feature service: the inputs an entity request names
    request_keys: tuple[str, ...] = ()  # what makes a request entity-keyed (set at load)
    alias: str | None = None
    device: str = "cpu"
    defaults: dict[str, float] = field(default_factory=dict)
    load_seconds: float = 0.0
    native: Runtime | None = None

    def predict(self, frame: Frame) -> Prediction:
        return self.runtime.predict(frame)

    def unload(self) -> None:
        """Drop references to the runtime objects (memory is freed once no request holds them)."""
        self.native = None
        if (close := getattr(self.runtime, "close", None)) is not None:  # a text model's scheduler
            close()

    def metadata_parameters(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.name,
            "runtime_reason": self.runtime_reason,
            "device": self.device,
            "alias": self.alias,
            "feature_service": self.feature_service,
        }


def _check_matrix(mlmodel: Any, folder: Path, schema: InputSchema, reference: Any) -> np.ndarray | None:
    frames = []
    try:
        example = mlmodel.load_input_example(str(folder))
    except Exception:  # noqa: BLE001 - an unreadable example only means fewer check rows
        example = None
    for src in (example, reference):
        if src is None:
            continue
        try:
            import pandas as pd

            df = src if isinstance(src, pd.DataFrame) else pd.DataFrame(np.asarray(src), columns=schema.names)
            frames.append(df[schema.names].to_numpy(dtype=np.float64))
        except Exception:  # noqa: BLE001
            continue
    if not frames:
        return None
    m = np.vstack(frames)
    m = m[np.isfinite(m).all(axis=1)]
    return m if len(m) else None


def resolve_torch_device(setting: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_local_model(
    folder: Path,
    *,
    name: str,
    version: str,
    runtime: str = "auto",
    tolerance: float = 1e-4,
    onnx_threads: int = 1,
    torch_device: str = "auto",
    reference: Any = None,
    keep_onnx: bool = False,
) -> LoadedModel:
    """Load an MLflow model folder natively, try the ONNX fast path, check parity, warm it up.

    When ONNX Runtime serves, the native model is not kept (nothing in serving calls it again), nor
    the ONNX bytes unless ``keep_onnx`` (the cache's prepare step writes them out)."""
    from mlflow.models import Model

    start = time.perf_counter()
    from mlplatform.serving.text.runtime import is_text_model, load_text_model

    if is_text_model(folder):  # transformers pipelines and string-input pyfunc models: serving/text
        return load_text_model(folder, name=name, version=version, torch_device=torch_device)
    mlmodel = Model.load(str(folder / "MLmodel"))
    schema = schema_from_signature(mlmodel.signature)
    flavors = mlmodel.flavors
    check = _check_matrix(mlmodel, folder, schema, reference)
    device = "cpu"
    native: Runtime
    if "sklearn" in flavors:
        import mlflow.sklearn

        platform = "sklearn"
        sk = mlflow.sklearn.load_model(str(folder))
        native = SklearnRuntime(sk, schema)
    elif "pytorch" in flavors:
        import mlflow.pytorch

        platform = "pytorch"
        if not schema.numeric:
            raise UnsupportedModel("torch models need numeric input columns")
        device = resolve_torch_device(torch_device)
        tm = mlflow.pytorch.load_model(str(folder), map_location=device)
        native = TorchRuntime(tm, device)
    else:
        raise UnsupportedModel(
            f"model flavors {sorted(flavors)} are not served; log with mlflow.sklearn or mlflow.pytorch"
        )
    if check is None:
        rng = np.random.default_rng(0)
        check = rng.normal(size=(32, len(schema.columns)))
        log.warning(
            "model %s/%s has no input example or reference rows; checking on random rows", name, version
        )
    if isinstance(native, TorchRuntime):
        native.transform = _choose_transform(native.raw(check))
    check_frame = Frame(matrix=check, columns={}, n_rows=len(check))
    if not schema.numeric:
        check_frame = Frame(matrix=None, columns={}, n_rows=0)
    chosen: Runtime = native
    reason = "runtime setting is 'native'"
    if runtime != "native":
        if not schema.numeric:
            reason = "model has string inputs; ONNX fast path needs numeric columns"
        else:
            chosen, reason = _try_onnx(native, check_frame, len(schema.columns), tolerance, onnx_threads)
    if isinstance(native, TorchRuntime) and chosen is native:
        pass
    outputs = _output_meta(chosen.predict(check_frame) if schema.numeric else native_outputs(native))
    if schema.numeric:  # warm-up: a batch and a few single rows
        for _ in range(3):
            chosen.predict(Frame(matrix=check[:1], columns={}, n_rows=1))
    defaults = {}
    if schema.numeric:
        med = np.median(check, axis=0)
        defaults = {c.name: float(v) for c, v in zip(schema.columns, med, strict=True) if math.isfinite(v)}
    if isinstance(chosen, OnnxRuntime) and not keep_onnx:
        chosen.model_bytes = None
    log.info(
        "loaded model %s/%s with runtime %s (%s)",
        name,
        version,
        chosen.name,
        reason,
        extra={"model": name, "version": version, "runtime": chosen.name},
    )
    return LoadedModel(
        name=name,
        version=version,
        platform=platform,
        schema=schema,
        runtime=chosen,
        outputs=outputs,
        check_rows=check,
        runtime_reason=reason,
        device=device if chosen is native else "cpu",
        defaults=defaults,
        load_seconds=time.perf_counter() - start,
        native=native if chosen is native else None,
    )


def load_prepared(entry: Any, *, name: str, version: str, onnx_threads: int = 1) -> LoadedModel:  # noqa: ANN401
    """A model served by ONNX Runtime from a verified cache entry (:mod:`mlplatform.serving.cache`):
    no native load, conversion or parity check, and no scikit-learn, torch or mlflow import."""
    start = time.perf_counter()
    meta = entry.meta
    spec = meta["onnx"]
    classes = np.asarray(spec["classes"]) if spec.get("classes") is not None else None
    runtime = OnnxRuntime(
        entry.onnx,
        threads=onnx_threads,
        input_dtype=np.dtype(spec["input_dtype"]).type,
        kind=spec["kind"],
        classes=classes,
        transform=spec.get("transform", "none"),
    )
    runtime.model_bytes = None
    tensor = meta.get("tensor")
    schema = InputSchema(
        tuple(ColumnSpec(n, t) for n, t in meta["schema"]),
        TensorInput(tensor[0], tensor[1], tuple(tensor[2])) if tensor else None,
    )
    check = entry.check_rows
    if check is not None and len(check):  # warm-up: a few single rows, as load_local_model does
        for _ in range(3):
            runtime.predict(Frame(matrix=check[:1], columns={}, n_rows=1))
    return LoadedModel(
        name=name,
        version=version,
        platform=meta["platform"],
        schema=schema,
        runtime=runtime,
        outputs=[MetadataTensor(name=n, datatype=d, shape=[-1]) for n, d in meta["outputs"]],
        check_rows=check,
        runtime_reason=meta["runtime_reason"] + " (prepared once, from the pod's model cache)",
        device="cpu",
        defaults={k: float(v) for k, v in meta.get("defaults", {}).items()},
        load_seconds=time.perf_counter() - start,
    )


def native_outputs(native: Runtime) -> Prediction:
    if isinstance(native, SklearnRuntime) and not native.classifier:
        return Prediction({PREDICTION: np.zeros(0)})
    return Prediction({PROBABILITY: np.zeros(0), LABEL: np.zeros(0, dtype=np.int64)})


def _output_meta(pred: Prediction) -> list[MetadataTensor]:
    meta = []
    for k, v in pred.outputs.items():
        kind = v.dtype.kind
        dt = "FP64" if kind == "f" else "INT64" if kind in "iu" else "BOOL" if kind == "b" else "BYTES"
        meta.append(MetadataTensor(name=k, datatype=dt, shape=[-1]))
    return meta


def _try_onnx(
    native: Runtime, check: Frame, n_features: int, tolerance: float, threads: int
) -> tuple[Runtime, str]:
    try:
        if isinstance(native, SklearnRuntime):
            data, dtype = _sklearn_to_onnx(native.model, n_features)
            kind = "sklearn-classifier" if native.classifier else "sklearn-regressor"
            onnx_rt = OnnxRuntime(data, threads=threads, input_dtype=dtype, kind=kind, classes=native.classes)
        elif isinstance(native, TorchRuntime):
            data = _torch_to_onnx(native.model, n_features)
            native.model.to(native.device)
            onnx_rt = OnnxRuntime(
                data, threads=threads, input_dtype=np.float32, kind="torch", transform=native.transform
            )
        else:  # pragma: no cover - only two native runtimes exist
            return native, "no ONNX converter for this runtime"
    except Exception as exc:  # noqa: BLE001 - conversion failure means native serving
        reason = (
            f"ONNX conversion failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
        )
        log.warning("%s; serving natively", reason)
        return native, reason
    try:
        want = native.predict(check)
        got = onnx_rt.predict(check)
    except Exception as exc:  # noqa: BLE001
        reason = f"ONNX model failed on the check rows: {str(exc)[:300]}"
        log.warning("%s; serving natively", reason)
        return native, reason
    worst = 0.0
    for key, expected in want.outputs.items():
        actual = got.outputs.get(key)
        if actual is None or actual.shape != expected.shape:
            return native, f"ONNX output '{key}' missing or has another shape; serving natively"
        if expected.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(actual - expected))) if len(expected) else 0.0)
    if worst > tolerance:
        reason = f"ONNX outputs differ from native by {worst:.3g} (> tolerance {tolerance:g}) on {check.n_rows} rows"
        log.warning("%s; serving natively", reason)
        return native, reason
    return (
        onnx_rt,
        f"ONNX matches native within {tolerance:g} (max diff {worst:.2g}) on {check.n_rows} check rows",
    )
