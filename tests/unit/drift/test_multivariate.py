"""Multivariate drift: MMD against a direct kernel computation, the domain classifier against Evidently,
the joint-distribution shift per-column tests miss, per-model options, and the service's windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import rbf_kernel

from mlplatform.drift import multivariate as mv
from mlplatform.drift import stats
from tests.unit.drift.tiny_registry import MODEL, drift_settings, make_frame, records, running_app


def correlated(n: int, rho: float, seed: int, features: int = 6, shift: float = 0.0) -> pd.DataFrame:
    """Standard normal features; f0/f1 correlated with ``rho``; a categorical ``kind`` column."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    x[:, 2] += shift
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    df["kind"] = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    return df


def direct_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 written out from the full kernel matrices (sklearn's RBF kernel)."""
    gamma = 1.0 / (2.0 * sigma**2)
    kxx, kyy, kxy = (
        rbf_kernel(x, x, gamma=gamma),
        rbf_kernel(y, y, gamma=gamma),
        rbf_kernel(x, y, gamma=gamma),
    )
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def test_mmd_statistic_and_permutations_equal_a_direct_computation():
    ref, cur = correlated(300, 0.8, 1), correlated(250, 0.2, 2, shift=0.3)
    prep = mv.PreparedMultivariate(ref, list(ref.columns), mv.MultivariateOptions(methods=["mmd"]))
    x, y = prep.x_ref, prep.encoder.encode(cur)
    assert x.shape == (300, 6 + 3)  # six standardised numericals + one-hot of three categories
    stat, null = mv.mmd_permutation_test(x, y, prep.sigma, permutations=20, seed=7)
    assert stat == pytest.approx(direct_mmd2(x, y, prep.sigma), rel=1e-9, abs=1e-12)
    # the permutation null: labelling p is default_rng(seed)'s p-th permutation of the pooled rows
    pooled = np.vstack([x, y])
    rng = np.random.default_rng(7)
    for p in range(5):
        # pooled row i joins the first group when the permutation maps it into the first 300 places
        mask = rng.permutation(len(pooled)) < 300
        xp, yp = pooled[mask], pooled[~mask]
        assert null[p] == pytest.approx(direct_mmd2(xp, yp, prep.sigma), rel=1e-9, abs=1e-12)
    result = prep.detect(cur).results["mmd"]
    assert result.statistic == pytest.approx(direct_mmd2(x, y, prep.sigma), rel=1e-9)
    assert result.details["sigma"] == prep.sigma


def test_bandwidth_is_the_median_heuristic_on_the_reference():
    x = correlated(301, 0.5, 3).drop(columns="kind").to_numpy()
    # alibi-detect: element n + (n^2 - n) // 2 - 1 of all sorted squared distances (zeros first) ==
    # element (n^2 - n) // 2 - 1 of the off-diagonal ones, each pair counted twice
    d = np.sort(np.repeat(pdist(x, "sqeuclidean"), 2))
    n = len(x)
    assert mv.median_bandwidth(x) == pytest.approx(np.sqrt(0.5 * d[(n * n - n) // 2 - 1]), rel=1e-9)
    assert mv.median_bandwidth(np.ones((5, 3))) == 1.0


def test_a_correlation_change_is_multivariate_drift_the_columns_do_not_show():
    ref = correlated(1500, 0.9, 10)
    # seeded: a calm window from the same distribution (its p-value is 0.79; at p < 0.05 about one calm
    # window in twenty counts as drifted, by the test's design)
    same = correlated(800, 0.9, 16)
    decorrelated = correlated(800, 0.0, 12)  # every marginal unchanged
    feats = list(ref.columns)
    per_column = stats.dataset_drift(stats.PreparedReference(ref), decorrelated, feats, drift_share=0.5)
    assert per_column.drifted_count == 0
    opts = mv.MultivariateOptions(methods=list(mv.METHODS), classifier="gradient_boosting", max_rows=1500)
    prep = mv.PreparedMultivariate(ref, feats, opts)
    calm, moved = prep.detect(same), prep.detect(decorrelated)
    assert not calm.results["mmd"].drifted and calm.results["mmd"].p_value >= 0.05
    assert moved.results["mmd"].drifted and moved.results["mmd"].p_value < 0.05
    assert moved.results["mmd"].statistic > moved.results["mmd"].threshold
    assert not calm.results["domain_classifier"].drifted
    assert moved.results["domain_classifier"].drifted and moved.drifted


@pytest.mark.parametrize(
    ("case", "threshold"),
    [
        ("same", None),
        ("mean_shift", None),
        ("small_shift", None),
        ("decorrelated", None),
        ("same", 0.55),
        ("mean_shift", 0.55),
    ],
)
def test_domain_classifier_decision_equals_evidentlys(case, threshold):
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import ModelDriftMethod

    ref = correlated(700, 0.8, 20)
    cur = {
        "same": correlated(500, 0.8, 21),
        "mean_shift": correlated(500, 0.8, 22, shift=0.8),
        "small_shift": correlated(500, 0.8, 23, shift=0.15),
        "decorrelated": correlated(500, 0.0, 24),
    }[case]
    opts = mv.MultivariateOptions(methods=["domain_classifier"], classifier_threshold=threshold)
    prep = mv.PreparedMultivariate(ref, list(ref.columns), opts)
    ours = prep.detect(cur).results["domain_classifier"]
    # Evidently's own method on the same encoded rows
    x_ref, x_cur = pd.DataFrame(prep.x_ref), pd.DataFrame(prep.encoder.encode(cur))
    method = (
        ModelDriftMethod(bootstrap=True, quantile_probability=0.95)
        if threshold is None
        else ModelDriftMethod(threshold=threshold)
    )
    auc, drifted, kind = method(x_cur, x_ref)
    assert kind == "model"
    assert ours.statistic == pytest.approx(auc, abs=1e-12)
    assert ours.drifted == bool(drifted)
    if case == "mean_shift":
        assert ours.drifted
    if case == "same":
        assert not ours.drifted


def test_options_per_model_and_bad_configuration():
    from pydantic import ValidationError

    from mlplatform.drift.settings import DriftSettings

    settings = DriftSettings(
        multivariate={"methods": ["mmd"], "permutations": 30},
        multivariate_models={"quiet": {"methods": []}},
    )
    monitor = mv.MultivariateMonitor(settings.multivariate, settings.multivariate_models)
    ref, cur = correlated(200, 0.5, 30), correlated(100, 0.5, 31)
    assert monitor.detect("quiet", "1", ref, list(ref.columns), cur) is None
    result = monitor.detect("other", "1", ref, list(ref.columns), cur)
    assert result is not None and list(result.results) == ["mmd"]
    assert result.results["mmd"].details["permutations"] == 30
    with pytest.raises(ValidationError, match="unknown multivariate methods"):
        DriftSettings(multivariate={"methods": ["energy"]})
    with pytest.raises(ValidationError, match="classifier"):
        DriftSettings(multivariate_models={"m": {"classifier": "forest"}})


async def test_windows_carry_multivariate_drift_gauges_and_report(tiny_registry, tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFT_DATABASE_URL", raising=False)
    settings = drift_settings(
        tiny_registry,
        tmp_path,
        window_size=300,
        multivariate={"methods": ["mmd", "domain_classifier"], "permutations": 50, "max_rows": 1000},
    )
    async with running_app(settings) as (client, _):
        calm = records(make_frame(300, seed=41), MODEL, "1", "mv-calm")
        assert (await client.post("/v1/records", json={"records": calm})).json()["windows_closed"] == 1
        window = (await client.get(f"/v1/models/{MODEL}/drift")).json()["window"]
        assert window["multivariate"]["drifted"] is False
        assert set(window["multivariate"]["methods"]) == {"mmd", "domain_classifier"}
        shifted = records(make_frame(300, seed=42, shift=1.0), MODEL, "1", "mv-shift")
        await client.post("/v1/records", json={"records": shifted})
        window = (await client.get(f"/v1/models/{MODEL}/drift")).json()["window"]
        multi = window["multivariate"]
        assert multi["drifted"] is True and multi["current_rows"] == 300 and multi["reference_rows"] == 1000
        assert multi["methods"]["mmd"]["p_value"] < 0.05
        metrics = (await client.get("/metrics")).text
        auc = multi["methods"]["domain_classifier"]["statistic"]
        line = f'mlplatform_drift_multivariate_score{{method="domain_classifier",model="{MODEL}",version="1"}} {auc}'
        assert line in metrics
        assert (
            f'mlplatform_drift_multivariate_drifted{{method="mmd",model="{MODEL}",version="1"}} 1.0'
            in metrics
        )
        history = (await client.get(f"/v1/models/{MODEL}/drift/history")).json()["windows"]
        assert [w["multivariate"]["drifted"] for w in history] == [True, False]
        report = (await client.get(f"/v1/models/{MODEL}/drift/report")).text
        assert 'id="multivariate-drift"' in report and "MMD (RBF kernel, permutation test)" in report
        assert report.index('id="multivariate-drift"') < report.rindex("</body>")
