"""Explainer classes, one per model family, with a small lifecycle: ``load``, ``explain``, ``unload``.

* :class:`TreeShapExplainer` — ``shap.TreeExplainer`` for scikit-learn (and other shap-supported) tree
  ensembles; exact SHAP values, additive to float precision.
* :class:`TorchShapExplainer` — ``shap.DeepExplainer`` (DeepLIFT-SHAP) or ``shap.GradientExplainer``
  (expected gradients) for torch modules, on CUDA when available.
* :class:`KernelShapExplainer` — model-agnostic ``shap.KernelExplainer`` over the model's predict
  function, for anything else with a tabular signature.

Every explainer explains one scalar output per row (the positive-class probability of a binary
classifier, or the margin when the explainer works in log-odds space) and says which with
``output_space``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.errors import InvalidInput
from mlplatform.explain.settings import ExplainSettings
from mlplatform.v2.schema import InputSchema

log = logging.getLogger("mlplatform.explain")

# Output spaces reported in responses.
PROBABILITY = "probability"
MARGIN = "margin"
RAW = "raw"

IMPORTANCE_CHUNK = 25  # rows explained per lock hold while computing global importance


class UnsupportedModel(InvalidInput):
    """The model's flavour has no explainer (422)."""


def unloaded(label: str) -> InvalidInput:
    """The 422 of a request whose explainer was unloaded (evicted) after the request fetched it."""
    return InvalidInput(f"model {label}: its explainer was unloaded")


@dataclass
class LoadedModel:
    """A registered model version loaded for explanation."""

    name: str
    version: str
    flavour: str  # "sklearn", "pytorch" or another MLflow flavour name
    model: Any  # the native model object (estimator, nn.Module) or an MLflow pyfunc model
    schema: InputSchema  # serving's input schema (column names and types, in order)
    reference: pd.DataFrame  # reference sample restricted to feature_names, float64
    feature_service: str | None = None
    request_keys: tuple[str, ...] = ()  # what makes a request entity-keyed (set at load)

    @property
    def label(self) -> str:
        return f"'{self.name}' version {self.version}"

    @property
    def feature_names(self) -> list[str]:
        return self.schema.names


@dataclass
class Explanation:
    """Attributions for a batch: ``base_value + attributions.sum(1) == outputs`` (up to the method)."""

    predictions: np.ndarray  # (n,) what the model returns for each row (e.g. fraud probability)
    outputs: np.ndarray  # (n,) the model's output in ``output_space`` (what attributions add up to)
    base_value: float
    attributions: np.ndarray  # (n, n_features)


class ShapExplainer(ABC):
    """One model version's explainer. Not re-entrant: calls are serialised by a lock."""

    kind: str = ""

    def __init__(self, model: LoadedModel, settings: ExplainSettings) -> None:
        self.model = model
        self.settings = settings
        self.output_space = RAW
        self.feature_perturbation: str | None = None
        self._explainer: Any = None  # what load builds; None again once unloaded
        self._lock = threading.Lock()
        self._importance_lock = threading.Lock()
        self._importance: np.ndarray | None = None
        self._importance_rows = 0

    @property
    def feature_names(self) -> list[str]:
        return self.model.feature_names

    def background(self, size: int) -> pd.DataFrame:
        """The background sample: ``size`` rows of the reference data drawn with the configured seed."""
        ref = self.model.reference
        if len(ref) <= size:
            return ref
        return ref.sample(n=size, random_state=self.settings.sample_seed)

    @abstractmethod
    def load(self) -> None:
        """Build the underlying shap explainer (slow; called once per model version)."""

    @abstractmethod
    def _explain(self, x: np.ndarray) -> Explanation: ...

    def explain(self, x: np.ndarray) -> Explanation:
        """Explain rows ``x`` of shape (n, n_features) in ``feature_names`` order."""
        with self._lock:
            return self._explain_loaded(np.asarray(x, dtype=np.float64))

    def _explain_loaded(self, x: np.ndarray) -> Explanation:
        """``_explain`` (lock held), or a 422 when the explainer was unloaded since it was fetched."""
        if self._explainer is None:
            raise unloaded(self.model.label)
        return self._explain(x)

    def importance(self) -> tuple[np.ndarray, int]:
        """Global mean |SHAP| per feature over the reference sample (computed once, then cached).

        Computed in chunks, each under the explainer lock, so explain requests interleave with it.
        """
        with self._importance_lock:
            if self._importance is None:
                sample = self.model.reference
                size = self.settings.importance_sample_size
                if len(sample) > size:
                    sample = sample.sample(n=size, random_state=self.settings.sample_seed)
                x = sample.to_numpy(dtype=np.float64)
                total = np.zeros(x.shape[1])
                for start in range(0, len(x), IMPORTANCE_CHUNK):
                    with self._lock:
                        expl = self._explain_loaded(x[start : start + IMPORTANCE_CHUNK])
                    total += np.abs(expl.attributions).sum(axis=0)
                self._importance = total / len(x)
                self._importance_rows = len(x)
            return self._importance, self._importance_rows

    @property
    def importance_cached(self) -> bool:
        return self._importance is not None

    def unload(self) -> None:
        """Drop the shap explainer (waiting for a running explanation to finish)."""
        with self._lock:
            self._importance = None
            self._release()

    @abstractmethod
    def _release(self) -> None:
        """Drop what ``load`` built."""


def _positive_column(values: Any, n_features: int) -> np.ndarray:
    """Pick the positive class from shap output shaped (n, f), (n, f, k) or a list of k (n, f)."""
    if isinstance(values, list):
        values = values[-1] if len(values) > 1 else values[0]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[:, :, 1] if arr.shape[2] == 2 else arr[:, :, 0]
    if arr.ndim == 1:
        arr = arr.reshape(1, n_features)
    return arr


def _positive_scalar(value: Any) -> float:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    return float(arr[1] if arr.size == 2 else arr[0])


class _SklearnPredict:
    """Predictions of a scikit-learn style model on a numpy batch (as a DataFrame with its column names)."""

    def __init__(self, model: Any, feature_names: list[str]) -> None:
        self.model = model
        self.feature_names = feature_names
        self.is_classifier = hasattr(model, "predict_proba")
        self.n_classes = len(getattr(model, "classes_", [])) if self.is_classifier else 0
        if self.is_classifier and self.n_classes > 2:
            raise UnsupportedModel(
                "multi-class classifiers are not supported: explanations cover one output per row"
            )

    def frame(self, x: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(x, columns=self.feature_names)

    def prediction(self, x: np.ndarray) -> np.ndarray:
        if self.is_classifier:
            return np.asarray(self.model.predict_proba(self.frame(x)), dtype=np.float64)[:, -1]
        return np.asarray(self.model.predict(self.frame(x)), dtype=np.float64).reshape(len(x))


class TreeShapExplainer(ShapExplainer):
    """shap.TreeExplainer; exact SHAP values for tree ensembles."""

    kind = "tree"

    def load(self) -> None:
        import shap

        s = self.settings
        _SklearnPredict(self.model.model, self.feature_names)  # rejects multi-class classifiers
        self.feature_perturbation = s.tree_feature_perturbation
        data = None
        if s.tree_feature_perturbation == "interventional":
            data = self.background(s.tree_background_size).to_numpy(dtype=np.float64)
        self._explainer = shap.TreeExplainer(
            self.model.model,
            data=data,
            model_output=s.tree_model_output,
            feature_perturbation=s.tree_feature_perturbation,
        )
        tree_output = self._explainer.model.tree_output
        if s.tree_model_output == "probability" or tree_output == "probability":
            self.output_space = PROBABILITY
        elif tree_output == "log_odds":
            self.output_space = MARGIN
        else:
            self.output_space = RAW
        self._base = _positive_scalar(self._explainer.expected_value)

    def _explain(self, x: np.ndarray) -> Explanation:
        values = self._explainer.shap_values(x, check_additivity=False)
        attributions = _positive_column(values, x.shape[1])
        # shap's compiled ensemble evaluates the same trees as the model (much faster than
        # predict_proba for one row); its output is in the explained space
        raw = np.asarray(self._explainer.model.predict(x), dtype=np.float64)
        outputs = raw[:, -1] if raw.ndim == 2 else raw.reshape(len(x))
        predictions = 1.0 / (1.0 + np.exp(-outputs)) if self.output_space == MARGIN else outputs
        return Explanation(predictions, outputs, self._base, attributions)

    def _release(self) -> None:
        self._explainer = None


def _as_eager_modules(module: Any) -> Any:
    """Give DeepExplainer a module leaf for every nonlinearity, so DeepLIFT's rescale rule applies.

    DeepExplainer hooks ``nn.Module`` leaves only. A nonlinearity called as a function
    (``torch.sigmoid(x)`` in ``forward``, or any ``aten`` op of a ``torch.export`` program, MLflow's
    ``pt2`` format) would silently get a plain gradient instead. The module is traced with
    ``torch.fx`` (pt2 programs already are graphs) and each elementwise nonlinearity shap supports is
    rewritten into a call of the equivalent module: the same maths, now hookable. Linear operations
    need no rule. A module fx cannot trace is returned unchanged (and DeepExplainer's additivity
    check decides whether it is usable).
    """
    import torch
    import torch.nn.functional as F

    if isinstance(module, torch.fx.GraphModule):
        graph_module = module
    else:
        try:
            graph_module = torch.fx.symbolic_trace(module)
        except Exception as exc:  # noqa: BLE001 - any tracing failure: use the module as it is
            log.info("torch.fx cannot trace %s (%s); explaining it untraced", type(module).__name__, exc)
            return module
    aten = torch.ops.aten
    equivalents: dict[Any, Any] = {
        aten.relu.default: torch.nn.ReLU,
        aten.sigmoid.default: torch.nn.Sigmoid,
        aten.tanh.default: torch.nn.Tanh,
        aten.elu.default: torch.nn.ELU,
        aten.selu.default: torch.nn.SELU,
        aten.softplus.default: torch.nn.Softplus,
        torch.relu: torch.nn.ReLU,
        torch.sigmoid: torch.nn.Sigmoid,
        torch.tanh: torch.nn.Tanh,
        F.relu: torch.nn.ReLU,
        F.sigmoid: torch.nn.Sigmoid,
        F.tanh: torch.nn.Tanh,
        F.elu: torch.nn.ELU,
        F.selu: torch.nn.SELU,
        F.softplus: torch.nn.Softplus,
        "relu": torch.nn.ReLU,
        "sigmoid": torch.nn.Sigmoid,
        "tanh": torch.nn.Tanh,
    }
    graph = graph_module.graph
    count = 0
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_method") or len(node.args) != 1:
            continue
        if any(value is not False for value in node.kwargs.values()):  # only inplace=False allowed
            continue
        # call_method targets are method names ("sigmoid"), call_function targets are callables
        is_name = isinstance(node.target, str)
        factory = equivalents.get(node.target) if is_name == (node.op == "call_method") else None
        if factory is None:
            continue
        name = f"_shap_nonlinear_{count}"
        count += 1
        graph_module.add_module(name, factory())
        with graph.inserting_after(node):
            replacement = graph.call_module(name, node.args)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    if count:
        graph_module.recompile()
    return graph_module


def _two_dim(module: Any) -> Any:
    """Wrap a torch module so its output is (n, k), as shap's torch explainers expect."""
    import torch

    class TwoDim(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            return y.reshape(y.shape[0], -1)

        def train(self, mode: bool = True) -> TwoDim:
            self.training = mode
            try:
                self.inner.train(mode)
            except NotImplementedError:  # torch.export modules are fixed in eval mode
                pass
            return self

    return TwoDim(module).eval()


class TorchShapExplainer(ShapExplainer):
    """shap.DeepExplainer or shap.GradientExplainer for a torch module taking one float tensor."""

    kind = "deep"

    def load(self) -> None:
        import torch

        s = self.settings
        want_cuda = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
        # torch.export (pt2) programs keep the device they were exported on
        exported = isinstance(self.model.model, torch.fx.GraphModule)
        self.device = torch.device("cuda" if want_cuda and not exported else "cpu")
        warnings.filterwarnings("ignore", message="For backward hooks to be called", category=UserWarning)
        self._module = _two_dim(_as_eager_modules(self.model.model)).to(self.device)
        for p in self._module.parameters():
            p.requires_grad_(False)
        bg = self.background(s.background_size).to_numpy(dtype=np.float32)
        self._bg = torch.from_numpy(bg).to(self.device)
        with torch.no_grad():
            out = self._module(self._bg).detach().cpu().numpy()
        self._column = 1 if out.shape[1] == 2 else 0
        if out.shape[1] > 2:
            raise UnsupportedModel("torch models with more than two outputs per row are not supported")
        col = out[:, self._column]
        self.output_space = PROBABILITY if (col.min() >= 0.0 and col.max() <= 1.0) else RAW
        self._base = float(col.mean())
        kind = s.torch_explainer
        if kind in ("auto", "deep"):
            try:
                self._build_deep()
                if kind == "auto":
                    self._verify_deep(bg[: min(len(bg), 16)])
                self.kind = "deep"
                return
            except (AssertionError, RuntimeError, KeyError, ValueError) as exc:
                if kind == "deep":
                    raise
                log.warning(
                    "DeepExplainer unsuitable for %s (%s); using GradientExplainer", self.model.label, exc
                )
        self._build_gradient()
        self.kind = "gradient"

    def _build_deep(self) -> None:
        import shap

        self._explainer = shap.DeepExplainer(self._module, self._bg)
        self._base = _positive_scalar(self._explainer.expected_value)

    def _verify_deep(self, rows: np.ndarray) -> None:
        import torch

        x = torch.from_numpy(rows).to(self.device)
        self._explainer.shap_values(x, check_additivity=True)  # raises AssertionError when not additive

    def _build_gradient(self) -> None:
        import shap

        self._explainer = shap.GradientExplainer(self._module, self._bg)

    def _forward(self, x: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._module(x).detach().cpu().numpy().astype(np.float64)[:, self._column]

    def _explain(self, x: np.ndarray) -> Explanation:
        import torch

        xt = torch.from_numpy(x.astype(np.float32)).to(self.device)
        if self.kind == "deep":
            values = self._explainer.shap_values(xt, check_additivity=False)
        else:
            values = self._explainer.shap_values(xt, nsamples=self.settings.gradient_samples, rseed=0)
        attributions = _positive_column(values, x.shape[1])
        if attributions.ndim == 3:  # (n, f, outputs)
            attributions = attributions[:, :, self._column]
        outputs = self._forward(xt)
        return Explanation(outputs, outputs, self._base, attributions)

    def _release(self) -> None:
        self._explainer = None
        self._module = None
        self._bg = None


class KernelShapExplainer(ShapExplainer):
    """shap.KernelExplainer over the model's predict function (model-agnostic, slow)."""

    kind = "kernel"

    def load(self) -> None:
        import shap

        s = self.settings
        model = self.model.model
        if self.model.flavour == "pyfunc":
            names = self.feature_names

            def predict(x: np.ndarray) -> np.ndarray:
                out = model.predict(pd.DataFrame(x, columns=names))
                arr = np.asarray(out, dtype=np.float64)
                return arr[:, -1] if arr.ndim == 2 else arr.reshape(len(x))

            self._predict_fn = predict
            self.output_space = RAW
        else:
            sk = _SklearnPredict(model, self.feature_names)
            self._predict_fn = sk.prediction
            self.output_space = PROBABILITY if sk.is_classifier else RAW
        bg = self.background(s.kernel_background_size).to_numpy(dtype=np.float64)
        self._explainer = shap.KernelExplainer(self._predict_fn, bg)
        self._base = _positive_scalar(self._explainer.expected_value)

    def _explain(self, x: np.ndarray) -> Explanation:
        values = self._explainer.shap_values(
            x, nsamples=self.settings.kernel_nsamples, l1_reg=False, silent=True
        )
        attributions = _positive_column(values, x.shape[1])
        outputs = self._predict_fn(x)
        return Explanation(outputs, outputs, self._base, attributions)

    def _release(self) -> None:
        self._explainer = None


def _is_tree_model(model: Any) -> bool:
    """Whether shap.TreeExplainer understands the model (without building it)."""
    from shap.utils import safe_isinstance

    return safe_isinstance(
        model,
        [
            "sklearn.ensemble.RandomForestClassifier",
            "sklearn.ensemble.RandomForestRegressor",
            "sklearn.ensemble.ExtraTreesClassifier",
            "sklearn.ensemble.ExtraTreesRegressor",
            "sklearn.ensemble.GradientBoostingClassifier",
            "sklearn.ensemble.GradientBoostingRegressor",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            "sklearn.ensemble.HistGradientBoostingRegressor",
            "sklearn.ensemble.IsolationForest",
            "sklearn.tree.DecisionTreeClassifier",
            "sklearn.tree.DecisionTreeRegressor",
            "xgboost.core.Booster",
            "xgboost.sklearn.XGBClassifier",
            "xgboost.sklearn.XGBRegressor",
            "lightgbm.basic.Booster",
            "lightgbm.sklearn.LGBMClassifier",
            "lightgbm.sklearn.LGBMRegressor",
        ],
    )


def choose_explainer(model: LoadedModel, settings: ExplainSettings) -> ShapExplainer:
    """The explainer for a model's flavour: tree, torch (deep/gradient) or kernel fallback."""
    if model.flavour == "sklearn" and _is_tree_model(model.model):
        return TreeShapExplainer(model, settings)
    if model.flavour == "pytorch":
        return TorchShapExplainer(model, settings)
    if model.flavour in ("sklearn", "pyfunc") and settings.kernel_fallback:
        return KernelShapExplainer(model, settings)
    kind = type(model.model).__name__
    hint = "" if settings.kernel_fallback else " (EXPLAIN_KERNEL_FALLBACK is off)"
    raise UnsupportedModel(
        f"model {model.label} has flavour {model.flavour!r} ({kind}) and no explainer supports it{hint}"
    )
