"""Benchmark model quality (drift detection's labels, CBPE, segments) on the demo fraud data.

1. Time per window of 1,000 predictions, over 100,000 predictions (100 windows): realized metrics
   (``mlplatform.quality.metrics.realized_metrics``: precision, recall, F1, ROC AUC, PR AUC,
   calibration error) and the CBPE estimate (``mlplatform.quality.cbpe.CBPE``), plus CBPE's one-off fit.
2. Estimate vs realized error per window on the demo data (the platform's generator, features by the
   point-in-time join, the demo random forest), in three scenarios:
   * ``none``: windows as the traffic comes (``none-5k``: windows of 5,000, where the realized value
     itself is less noisy, to tell the estimate's bias from the sampling noise of ~20 frauds a window);
   * ``covariate``: each window over-samples the transactions the model is unsure about (score in
     [0.02, 0.5], 20x weight; labels stay those of the rows, so P(label | inputs) is unchanged);
   * ``concept``: inputs as they come, but a new fraud pattern in one merchant category (8 % of its
     legitimate transactions become fraud): the labels change, the inputs do not.
   * ``joint`` (synthetic population, the one of tests/unit/drift/quality_registry.py, whose true
     P(label | inputs) is known): each column keeps exactly its values, but high amounts are re-paired
     with low merchant risk, so scores crowd the uncertain middle; ``joint-calm`` is the same population
     unshifted.
   Per scenario: windows with dataset drift (mlplatform's Evidently-equal per-column tests against the
   training reference sample), mean realized and estimated ROC AUC and recall, and the mean absolute
   error of the estimate.

3. Labels through ``POST /v1/models/{model}/labels`` of a real drift-detection process, on the embedded
   SQLite store and on PostgreSQL back to back: 20,000 predictions ingested (20 windows of 1,000, CBPE
   on each), then their 20,000 labels in batches of 2,000 (each batch stores the labels and recomputes
   realized performance and the estimate of the windows it touches): labels per second.

Run: .venv/bin/python scripts/bench/bench_quality.py   (part of ``make bench``)
Environment: BENCH_QUALITY_ROWS (transactions generated, default 250,000).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_QUALITY_ROWS", "250000"))
PREDICTIONS = 100_000
WINDOW = 1000
THRESHOLD = 0.5
METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc")


def demo_data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, object]:
    """Train / labelled reference / production split of the demo data, and the fitted forest."""
    from mlplatform.features import contract as feat
    from mlplatform.training import data as data_mod
    from mlplatform.training.models import train_forest

    tx = data_mod.generate_transactions(ROWS, seed=7)
    frame = feat.point_in_time_join(tx, feat.entity_snapshots(tx))
    frame = frame.sort_values(feat.TIMESTAMP_COLUMN, kind="stable").reset_index(drop=True)
    prod = frame.tail(PREDICTIONS).reset_index(drop=True)
    rest = frame.iloc[: len(frame) - PREDICTIONS]
    cut = int(len(rest) * 0.7)
    train, ref = rest.iloc[:cut].reset_index(drop=True), rest.iloc[cut:].reset_index(drop=True)
    cols = list(feat.MODEL_FEATURES)
    model = train_forest(
        train[cols], train[feat.LABEL_COLUMN].to_numpy(), n_estimators=60, max_depth=10, seed=7, n_jobs=2
    )
    for part in (train, ref, prod):
        part["prediction"] = model.predict_proba(part[cols])[:, 1]
    return train, ref, prod, model


def bench_timing(ref: pd.DataFrame, prod: pd.DataFrame) -> dict[str, float]:
    from mlplatform.quality.cbpe import CBPE
    from mlplatform.quality.metrics import realized_metrics

    t0 = time.perf_counter()
    cbpe = CBPE(threshold=THRESHOLD).fit(ref["prediction"].to_numpy(), ref["is_fraud"].to_numpy())
    fit_s = time.perf_counter() - t0
    p, y = prod["prediction"].to_numpy(), prod["is_fraud"].to_numpy()
    real_t, est_t = [], []
    for start in range(0, len(p), WINDOW):
        pw, yw = p[start : start + WINDOW], y[start : start + WINDOW]
        t0 = time.perf_counter()
        realized_metrics(yw, pw, THRESHOLD)
        real_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cbpe.estimate(pw)
        est_t.append(time.perf_counter() - t0)
    return {
        "windows": len(real_t),
        "fit_s": fit_s,
        "calibrated": cbpe.calibrated,
        "realized_ms": statistics.median(real_t) * 1000,
        "estimate_ms": statistics.median(est_t) * 1000,
        "realized_total_s": sum(real_t),
        "estimate_total_s": sum(est_t),
    }


def scenario_windows(prod: pd.DataFrame, kind: str, rng: np.random.Generator) -> list[pd.DataFrame]:
    size = 5 * WINDOW if kind == "none-5k" else WINDOW
    windows = [prod.iloc[s : s + size].copy() for s in range(0, len(prod), size)]
    if kind == "covariate":
        p = prod["prediction"].to_numpy()
        weight = np.where((p >= 0.02) & (p <= 0.5), 20.0, 1.0)
        weight /= weight.sum()
        windows = [prod.iloc[rng.choice(len(prod), WINDOW, p=weight)].copy() for _ in range(40)]
    elif kind == "concept":
        category = int(prod["merchant_category"].value_counts().index[0])
        for w in windows:
            legit = (w["merchant_category"] == category) & (w["is_fraud"] == 0)
            flip = legit & (rng.random(len(w)) < 0.08)
            w.loc[flip, "is_fraud"] = 1
    return windows


def bench_scenarios(
    train: pd.DataFrame, ref: pd.DataFrame, prod: pd.DataFrame
) -> dict[str, dict[str, float]]:
    from mlplatform.drift.stats import PreparedReference, dataset_drift
    from mlplatform.features import contract as feat
    from mlplatform.quality.cbpe import CBPE
    from mlplatform.quality.metrics import realized_metrics

    cbpe = CBPE(threshold=THRESHOLD).fit(ref["prediction"].to_numpy(), ref["is_fraud"].to_numpy())
    cols = list(feat.MODEL_FEATURES)
    drift_ref = PreparedReference(train[cols].sample(5000, random_state=0).reset_index(drop=True))
    out: dict[str, dict[str, float]] = {}
    for kind in ("none", "none-5k", "covariate", "concept"):
        rng = np.random.default_rng(11)
        windows = scenario_windows(prod, kind, rng)
        drifted, real, est, err = (
            0,
            {m: [] for m in METRICS},
            {m: [] for m in METRICS},
            {m: [] for m in METRICS},
        )
        for w in windows:
            drifted += bool(dataset_drift(drift_ref, w[cols].reset_index(drop=True), cols).dataset_drift)
            r = realized_metrics(w["is_fraud"].to_numpy(), w["prediction"].to_numpy(), THRESHOLD)
            e = cbpe.estimate(w["prediction"].to_numpy())
            for m in METRICS:
                if r[m] is not None and e[m] is not None:
                    real[m].append(r[m])
                    est[m].append(e[m])
                    err[m].append(abs(e[m] - r[m]))
        out[kind] = {
            "windows": len(windows),
            "drifted": drifted,
            **{f"real_{m}": float(np.mean(real[m])) for m in METRICS},
            **{f"est_{m}": float(np.mean(est[m])) for m in METRICS},
            **{f"mae_{m}": float(np.mean(err[m])) for m in METRICS},
        }
    return out


def _population(n: int, rng: np.random.Generator) -> pd.DataFrame:
    f = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "merchant_risk": np.clip(rng.random(n), 0, 2),
            "hour": rng.integers(0, 24, n).astype(np.int64),
            "is_foreign": (rng.random(n) < 0.2).astype(np.int64),
        }
    )
    s = 0.01 * f["amount"] + 3 * f["merchant_risk"]
    f["prediction"] = 1 / (1 + np.exp(-(s - 3)))
    f["true_p"] = 1 / (1 + np.exp(-1.6 * (s - 3.2)))
    return f


def _repair(f: pd.DataFrame) -> pd.DataFrame:
    out = f.copy()
    order = np.argsort(out["amount"].to_numpy())
    values = out["merchant_risk"].to_numpy().copy()
    values[order] = np.sort(values)[::-1]
    out["merchant_risk"] = values
    s = 0.01 * out["amount"] + 3 * out["merchant_risk"]
    out["prediction"] = 1 / (1 + np.exp(-(s - 3)))
    out["true_p"] = 1 / (1 + np.exp(-1.6 * (s - 3.2)))
    return out


def bench_joint() -> dict[str, dict[str, float]]:
    from mlplatform.drift.stats import PreparedReference, dataset_drift
    from mlplatform.quality.cbpe import CBPE
    from mlplatform.quality.metrics import realized_metrics

    rng = np.random.default_rng(5)
    cols = ["amount", "merchant_risk", "hour", "is_foreign"]
    held = _population(4000, rng)
    cbpe = CBPE(threshold=THRESHOLD).fit(
        held["prediction"].to_numpy(), (rng.random(4000) < held["true_p"]).astype(int)
    )
    drift_ref = PreparedReference(_population(2000, rng)[cols])
    out = {}
    for kind in ("joint-calm", "joint"):
        drifted, real, est, err = 0, [], [], []
        for _ in range(50):
            w = _population(WINDOW, rng)
            if kind == "joint":
                w = _repair(w)
            y = (rng.random(WINDOW) < w["true_p"]).astype(int)
            drifted += bool(dataset_drift(drift_ref, w[cols].reset_index(drop=True), cols).dataset_drift)
            r = realized_metrics(y, w["prediction"].to_numpy(), THRESHOLD)["roc_auc"]
            e = cbpe.estimate(w["prediction"].to_numpy())["roc_auc"]
            real.append(r)
            est.append(e)
            err.append(abs(e - r))
        out[kind] = {
            "windows": 50,
            "drifted": drifted,
            "real": np.mean(real),
            "est": np.mean(est),
            "mae": np.mean(err),
        }
    return out


LABELS = 20_000
LABEL_BATCH = 2_000


def bench_labels() -> dict[str, float]:
    """labels/s per store backend (a real drift-detection process each)."""
    import tempfile

    import httpx
    from scripts.bench.drift_backends import per_backend
    from tests.procs import ServiceProcess
    from tests.unit.drift.quality_registry import QMODEL, add_quality_model, labels, population
    from tests.unit.drift.tiny_registry import make_registry, records

    def measure(backend: str, svc: ServiceProcess) -> float:
        frame = population(LABELS, seed=9)
        recs = records(frame, QMODEL, "1", f"b-{backend}")
        y = labels(frame, 10)
        with httpx.Client(base_url=svc.url, timeout=120) as client:
            for i in range(0, len(recs), 1000):
                client.post("/v1/records", json={"records": recs[i : i + 1000]}).raise_for_status()
            client.get(f"/v1/models/{QMODEL}/quality").raise_for_status()  # estimates done
            bodies = [
                {
                    "labels": [
                        {"prediction_id": f"b-{backend}-{j}", "label": int(y[j])}
                        for j in range(i, i + LABEL_BATCH)
                    ]
                }
                for i in range(0, LABELS, LABEL_BATCH)
            ]
            t0 = time.perf_counter()
            for body in bodies:
                r = client.post(f"/v1/models/{QMODEL}/labels", json=body)
                r.raise_for_status()
                assert r.json()["accepted"] == LABEL_BATCH, r.text
            return LABELS / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        reg = make_registry(Path(tmp) / "registry")
        add_quality_model(reg.uri, Path(tmp) / "quality")
        env = {
            **reg.env(),
            "DRIFT_AUTH_ENABLED": "false",
            "DRIFT_LOG_LEVEL": "WARNING",
            "DRIFT_MULTIVARIATE": '{"methods": []}',
        }
        return per_backend(Path(tmp), env, measure)


def main() -> None:
    t0 = time.perf_counter()
    train, ref, prod, _ = demo_data()
    prep_s = time.perf_counter() - t0
    timing = bench_timing(ref, prod)
    scen = bench_scenarios(train, ref, prod)
    print(
        f"\nmodel quality benchmark ({ROWS:,} demo transactions; {PREDICTIONS:,} predictions in windows of {WINDOW:,})"
    )
    print(
        f"data, features and forest: {prep_s:.1f} s; labelled reference {len(ref):,} rows "
        f"({int(ref['is_fraud'].sum())} fraud), production fraud rate {prod['is_fraud'].mean():.4f}"
    )
    print(
        f"CBPE fit on the labelled reference: {timing['fit_s'] * 1000:.1f} ms (isotonic calibration: {timing['calibrated']})"
    )
    print(f"{'per window (median of ' + str(timing['windows']) + ')':40}{'ms':>10}")
    print(f"{'realized metrics (6, sklearn)':40}{timing['realized_ms']:>10.2f}")
    print(f"{'CBPE estimate (6 metrics)':40}{timing['estimate_ms']:>10.2f}")
    print(
        f"{'all 100 windows: realized / CBPE (s)':40}{timing['realized_total_s']:>10.3f} / {timing['estimate_total_s']:.3f}"
    )
    print(
        f"\n{'scenario':12}{'windows':>8}{'drifted':>8}{'ROC AUC real':>14}{'est':>8}{'MAE':>8}"
        f"{'recall real':>13}{'est':>8}{'MAE':>8}{'PR AUC MAE':>12}{'F1 MAE':>8}"
    )
    for kind, s in scen.items():
        print(
            f"{kind:12}{s['windows']:>8}{s['drifted']:>8}{s['real_roc_auc']:>14.3f}{s['est_roc_auc']:>8.3f}"
            f"{s['mae_roc_auc']:>8.3f}{s['real_recall']:>13.3f}{s['est_recall']:>8.3f}{s['mae_recall']:>8.3f}"
            f"{s['mae_pr_auc']:>12.3f}{s['mae_f1']:>8.3f}"
        )
    joint = bench_joint()
    print(f"\n{'scenario':12}{'windows':>8}{'drifted':>8}{'ROC AUC real':>14}{'est':>8}{'MAE':>8}")
    for kind, s in joint.items():
        print(
            f"{kind:12}{s['windows']:>8}{s['drifted']:>8}{s['real']:>14.3f}{s['est']:>8.3f}{s['mae']:>8.3f}"
        )
    for backend, rate in bench_labels().items():
        print(
            f"labels/s through POST /v1/models/{{model}}/labels, {backend}: {rate:,.0f} ({LABELS:,} labels, batches of {LABEL_BATCH:,}, realized recomputed per batch)"
        )
    print("command: .venv/bin/python scripts/bench/bench_quality.py")


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    main()
