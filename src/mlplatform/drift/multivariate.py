"""Multivariate drift of a window: MMD with a permutation test, and a domain classifier.

Per-column tests (:mod:`mlplatform.drift.stats`) miss a change of the joint distribution that leaves
every marginal alone (two features that stop being correlated, a fraud ring that combines ordinary
amounts with ordinary merchants). Two tests look at the rows as a whole:

* **MMD** (maximum mean discrepancy), as alibi-detect's ``MMDDrift`` computes it: a Gaussian RBF
  kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` whose bandwidth ``sigma`` comes from the median
  heuristic on the reference (alibi-detect's ``sigma_median`` with ``configure_kernel_from_x_ref``),
  the unbiased MMD^2 estimate from the pooled kernel matrix with a zero diagonal
  (``mmd2_from_kernel_matrix``), and a permutation test: the p-value is the share of random
  re-labellings of the pooled rows whose MMD^2 is at least the observed one; drift when
  ``p < p_value``. Permutations are evaluated as matrix products with the 0/1 group indicators
  (``a^T K a``), in row blocks, so the N x N kernel matrix is never held or permuted whole.
* **Domain classifier**, as Evidently's ``ModelDriftMethod`` (its embeddings "model" drift method):
  reference rows labelled 1, current rows 0, a 50/50 shuffled train/test split (``random_state`` 42),
  ``SGDClassifier(loss="log_loss", random_state=42)`` (or gradient boosting), ROC AUC on the test
  half. Drift when the AUC exceeds the ``quantile`` (0.95) of the AUCs of 100 random scorers on the
  same test labels (Evidently's "bootstrap" threshold, same seeds) or, with a fixed threshold, when
  it exceeds that threshold (Evidently's default 0.55).

Rows are encoded once per model version, from the reference: numerical columns standardised with the
reference's mean and standard deviation (missing values at the mean), categorical columns one-hot
over the reference's most frequent values. Column types follow :func:`stats.infer_column_type`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from mlplatform.drift import stats

MMD = "mmd"
DOMAIN_CLASSIFIER = "domain_classifier"
METHODS = (MMD, DOMAIN_CLASSIFIER)
MAX_CATEGORIES = 20
_BLOCK_ROWS = 1024


class MultivariateOptions(BaseModel):
    """Multivariate drift settings of one model (``DRIFT_MULTIVARIATE`` for every model,
    ``DRIFT_MULTIVARIATE_MODELS`` per model, both JSON)."""

    methods: list[str] = Field(
        default_factory=list,
        description="Tests to run on every window: 'mmd', 'domain_classifier'; empty (the default) turns them "
        "off. Opt-in per model: they run when a window closes, on the ingest request that closes it (MMD "
        "with 100 permutations on 2 x 2,000 rows: ~1-2 s here), which lowers ingest throughput.",
    )
    max_rows: int = Field(
        2000,
        ge=20,
        le=20_000,
        description="Rows of the reference and of the window used at most (a seeded random sample of each).",
    )
    permutations: int = Field(100, ge=10, le=10_000, description="MMD permutation test: permutations.")
    p_value: float = Field(0.05, gt=0, lt=1, description="MMD: drift when the permutation p-value is below.")
    classifier: str = Field(
        "sgd",
        pattern="^(sgd|gradient_boosting)$",
        description="Domain classifier: 'sgd' (logistic SGD, Evidently's) or 'gradient_boosting' (sklearn "
        "HistGradientBoostingClassifier: also separates changes of interactions a linear model cannot).",
    )
    classifier_threshold: float | None = Field(
        None,
        gt=0.5,
        lt=1,
        description="Domain classifier: fixed ROC AUC threshold (Evidently's default 0.55); unset: the "
        "bootstrap threshold (quantile of random scorers' AUCs).",
    )
    quantile: float = Field(
        0.95, gt=0.5, lt=1, description="Domain classifier: quantile of the random AUCs the AUC must exceed."
    )
    seed: int = Field(0, description="Seed of the row samples and permutations (results are repeatable).")

    def model_post_init(self, _context: Any) -> None:  # noqa: ANN401
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown multivariate methods {unknown}; known: {list(METHODS)}")


@dataclass
class MethodResult:
    """One multivariate test on one window."""

    method: str
    statistic: float
    threshold: float
    p_value: float | None
    drifted: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MultivariateDrift:
    reference_rows: int
    current_rows: int
    columns: list[str]
    results: dict[str, MethodResult]

    @property
    def drifted(self) -> bool:
        return any(r.drifted for r in self.results.values())


def as_json(result: MultivariateDrift) -> dict[str, Any]:
    """The ``multivariate`` section of a stored window result."""
    return {
        "drifted": result.drifted,
        "reference_rows": result.reference_rows,
        "current_rows": result.current_rows,
        "columns": result.columns,
        "methods": {name: asdict(r) for name, r in result.results.items()},
    }


# -- encoding -------------------------------------------------------------------------------------
class RowEncoder:
    """Rows -> a float matrix: numerical columns standardised on the reference, categoricals one-hot."""

    def __init__(self, reference: pd.DataFrame, columns: list[str]) -> None:
        self.numerical: list[tuple[str, float, float]] = []
        self.categorical: list[tuple[str, list[str]]] = []
        for col in columns:
            values = reference[col]
            if stats.infer_column_type(values) == stats.NUMERICAL:
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                x = x[np.isfinite(x)]
                mean = float(x.mean()) if len(x) else 0.0
                std = float(x.std()) if len(x) else 0.0
                self.numerical.append((col, mean, std if std > 0 else 1.0))
            else:
                top = values.dropna().astype(str).value_counts().index[:MAX_CATEGORIES]
                self.categorical.append((col, [str(v) for v in top]))

    @property
    def width(self) -> int:
        return len(self.numerical) + sum(len(v) for _, v in self.categorical)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        parts: list[np.ndarray] = []
        for col, mean, std in self.numerical:
            x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
            z = (x - mean) / std
            parts.append(np.where(np.isfinite(z), z, 0.0)[:, None])
        for col, cats in self.categorical:
            s = frame[col].astype(object).where(frame[col].notna(), None)
            s = s.map(lambda v: None if v is None else str(v))
            parts.append(np.column_stack([(s == c).to_numpy(dtype=float) for c in cats]))
        if not parts:
            return np.zeros((len(frame), 0))
        return np.hstack(parts)


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= n else frame.sample(n, random_state=seed)


# -- MMD ------------------------------------------------------------------------------------------
def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances, clipped at 0 (rounding)."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """alibi-detect's ``sigma_median(x, x, dist)``: ``sqrt(0.5 * d)`` where ``d`` is the element
    ``n + (n^2 - n) // 2 - 1`` of the sorted pairwise squared distances (the lower median of the
    off-diagonal ones, the ``n`` zeros of the diagonal sorting first). 1.0 when that is 0."""
    n = len(x)
    dist = squared_distances(x, x).reshape(-1)
    k = n + (n * n - n) // 2 - 1
    d = float(np.partition(dist, k)[k])
    return float(np.sqrt(0.5 * d)) if d > 0 else 1.0


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, sigma: float, permutations: int, seed: int
) -> tuple[float, np.ndarray]:
    """Unbiased MMD^2 of ``x`` vs ``y`` (RBF kernel with bandwidth ``sigma``, zero diagonal) and the
    MMD^2 of ``permutations`` random re-labellings of the pooled rows (alibi-detect's
    ``mmd2_from_kernel_matrix`` with and without ``permute``).

    With ``a`` the 0/1 indicator of the first group and ``K`` the zero-diagonal kernel matrix of the
    pooled rows, the sums are ``S_xx = a^T K a``, ``S_xy = a^T K 1 - S_xx``,
    ``S_yy = 1^T K 1 - 2 a^T K 1 + S_xx``: one product ``K @ A`` for all labellings, by row blocks.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least two rows on each side")
    z = np.vstack([x, y]).astype(float, copy=False)
    total = m + n
    rng = np.random.default_rng(seed)
    observed = np.zeros(total)
    observed[:m] = 1.0
    labels = np.empty((total, permutations + 1))
    labels[:, 0] = observed
    for p in range(permutations):
        labels[:, p + 1] = observed[rng.permutation(total)]
    gamma = 1.0 / (2.0 * sigma * sigma)
    ka = np.empty_like(labels)
    row_sums = np.empty(total)
    sq = (z * z).sum(1)
    for start in range(0, total, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, total)
        d = sq[start:stop, None] + sq[None, :] - 2.0 * (z[start:stop] @ z.T)
        k = np.exp(-gamma * np.maximum(d, 0.0))
        idx = np.arange(start, stop)
        k[idx - start, idx] = 0.0  # zero diagonal
        ka[start:stop] = k @ labels
        row_sums[start:stop] = k.sum(1)
    s_xx = (labels * ka).sum(0)
    a_k1 = labels.T @ row_sums
    s_xy = a_k1 - s_xx
    s_yy = row_sums.sum() - 2.0 * a_k1 + s_xx
    mmd2 = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)
    return float(mmd2[0]), mmd2[1:]


# -- domain classifier ----------------------------------------------------------------------------
def random_auc_threshold(
    y_test: np.ndarray, quantile: float, iterations: int = 100
) -> tuple[float, np.ndarray]:
    """Evidently's bootstrap threshold: the ``quantile`` of the ROC AUCs of ``iterations`` uniform random
    scorers (``np.random.seed(i); np.random.rand(n)``, i = 0..iterations-1) on the test labels."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y_test, np.random.RandomState(i).rand(len(y_test))) for i in range(iterations)]
    return float(np.percentile(aucs, 100 * quantile)), np.asarray(aucs)


def domain_classifier_auc(
    x_ref: np.ndarray, x_cur: np.ndarray, classifier: str = "sgd"
) -> tuple[float, np.ndarray]:
    """ROC AUC of a classifier telling reference (1) from current (0) rows on a held-out half; and the
    test labels. Split and model as Evidently's ``ModelDriftMethod``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    data = np.vstack([x_ref, x_cur])
    target = np.concatenate([np.ones(len(x_ref), dtype=int), np.zeros(len(x_cur), dtype=int)])
    x_train, x_test, y_train, y_test = train_test_split(
        data, target, test_size=0.5, random_state=42, shuffle=True
    )
    if classifier == "gradient_boosting":
        clf: Any = HistGradientBoostingClassifier(max_iter=100, random_state=42)
    else:
        clf = SGDClassifier(loss="log_loss", random_state=42)
    # one OpenMP thread: the drift service runs this in a worker thread beside the event loop, and on a
    # busy node OpenMP's spinning workers made gradient boosting ~17x slower (9.4 s vs 0.55 s measured)
    with threadpool_limits(1, "openmp"):
        clf.fit(x_train, y_train)
        proba = clf.predict_proba(x_test)[:, 1]
    return float(roc_auc_score(y_test, proba)), y_test


# -- per model version ----------------------------------------------------------------------------
class PreparedMultivariate:
    """One model version's encoded reference sample, bandwidth and options (computed once)."""

    def __init__(self, reference: pd.DataFrame, features: list[str], options: MultivariateOptions) -> None:
        self.options = options
        usable = [c for c in features if reference[c].notna().any()]
        self.columns = usable
        self.encoder = RowEncoder(reference, usable)
        sample = _sample(reference[usable], options.max_rows, options.seed)
        self.x_ref = self.encoder.encode(sample)
        self.sigma = median_bandwidth(self.x_ref) if MMD in options.methods and len(self.x_ref) > 1 else 1.0

    def detect(self, current: pd.DataFrame) -> MultivariateDrift:
        """Both configured tests on ``current``, on one BLAS/OpenMP thread: a pod's CPU limit is not
        what OpenBLAS and OpenMP size their pools by, and on a busy 2-core machine one thread was
        faster (MMD 2 x 5,000 x 20: 2.0 s vs 3.6 s; gradient boosting 0.55 s vs 9.4 s)."""
        with threadpool_limits(1):
            return self._detect(current)

    def _detect(self, current: pd.DataFrame) -> MultivariateDrift:
        opts = self.options
        x_cur = self.encoder.encode(_sample(current[self.columns], opts.max_rows, opts.seed))
        results: dict[str, MethodResult] = {}
        if MMD in opts.methods:
            start = time.perf_counter()
            stat, null = mmd_permutation_test(self.x_ref, x_cur, self.sigma, opts.permutations, opts.seed)
            p = float((stat <= null).mean())
            # alibi-detect's distance_threshold: the permuted MMD^2 at rank p_value from the top
            ranked = np.sort(null)[::-1]
            threshold = float(ranked[min(int(opts.p_value * len(ranked)), len(ranked) - 1)])
            results[MMD] = MethodResult(
                MMD,
                stat,
                threshold,
                p,
                p < opts.p_value,
                time.perf_counter() - start,
                {
                    "sigma": self.sigma,
                    "permutations": opts.permutations,
                    "p_value_threshold": opts.p_value,
                    "null_quantiles": [float(q) for q in np.quantile(null, [0.05, 0.25, 0.5, 0.75, 0.95])],
                },
            )
        if DOMAIN_CLASSIFIER in opts.methods:
            start = time.perf_counter()
            auc, y_test = domain_classifier_auc(self.x_ref, x_cur, opts.classifier)
            if opts.classifier_threshold is None:
                threshold, random_aucs = random_auc_threshold(y_test, opts.quantile)
                p = float((random_aucs >= auc).mean())
            else:
                threshold, p = opts.classifier_threshold, None
            results[DOMAIN_CLASSIFIER] = MethodResult(
                DOMAIN_CLASSIFIER,
                auc,
                threshold,
                p,
                auc > threshold,
                time.perf_counter() - start,
                {
                    "classifier": opts.classifier,
                    "threshold_kind": "bootstrap" if opts.classifier_threshold is None else "fixed",
                    "quantile": opts.quantile,
                    "test_rows": len(y_test),
                },
            )
        return MultivariateDrift(len(self.x_ref), len(x_cur), self.columns, results)


class MultivariateMonitor:
    """The multivariate tests of every model version: options per model, prepared references cached."""

    def __init__(self, default: MultivariateOptions, per_model: dict[str, MultivariateOptions]) -> None:
        self.default = default
        self.per_model = per_model
        self._prepared: dict[tuple[str, str, int], PreparedMultivariate] = {}

    def options(self, model: str) -> MultivariateOptions:
        return self.per_model.get(model, self.default)

    def prepared(
        self, model: str, version: str, reference: pd.DataFrame, features: list[str]
    ) -> PreparedMultivariate | None:
        """The cached preparation for this version (None when the model has no multivariate test)."""
        opts = self.options(model)
        if not opts.methods or not features:
            return None
        key = (model, version, id(reference))
        prep = self._prepared.get(key)
        if prep is None:
            prep = PreparedMultivariate(reference, features, opts)
            self._prepared = {k: v for k, v in self._prepared.items() if k[:2] != (model, version)}
            self._prepared[key] = prep
        return prep

    def detect(
        self, model: str, version: str, reference: pd.DataFrame, features: list[str], current: pd.DataFrame
    ) -> MultivariateDrift | None:
        """Both tests on ``current`` (the window's rows); None when off for this model or too few rows."""
        prep = self.prepared(model, version, reference, features)
        if prep is None or len(current) < 2 or len(prep.x_ref) < 2 or prep.encoder.width == 0:
            return None
        return prep.detect(current)
