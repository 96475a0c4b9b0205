"""Run NannyML's own CBPE on a parquet file and print its per-chunk estimates as JSON.

Executed with the separate NannyML virtual environment (``make nannyml-venv``: NannyML's dependency
set is too heavy for the platform's lock file), so this file imports nothing from mlplatform.

    python nannyml_cbpe.py DATA.parquet CHUNK_SIZE
DATA has ``period`` ('reference'/'analysis'), ``p`` (score), ``y_pred`` (0/1) and ``y`` (label,
reference rows only).
"""

import json
import sys
import warnings

import pandas as pd

warnings.filterwarnings("ignore")

import nannyml  # noqa: E402

METRICS = ["precision", "recall", "f1", "roc_auc", "average_precision", "accuracy"]


def main() -> None:
    data = pd.read_parquet(sys.argv[1])
    chunk = int(sys.argv[2])
    ref = data[data.period == "reference"].drop(columns="period").reset_index(drop=True)
    ana = data[data.period == "analysis"].drop(columns=["period", "y"]).reset_index(drop=True)
    est = nannyml.CBPE(
        y_pred_proba="p",
        y_pred="y_pred",
        y_true="y",
        metrics=METRICS,
        chunk_size=chunk,
        problem_type="classification_binary",
    )
    est.fit(ref)
    res = est.estimate(ana).filter(period="analysis").to_df()
    out = {"needs_calibration": bool(est.needs_calibration), "chunks": []}
    for _, row in res.iterrows():
        out["chunks"].append(
            {
                "start": int(row[("chunk", "start_index")]),
                "end": int(row[("chunk", "end_index")]),
                **{m: float(row[(m, "value")]) for m in METRICS},
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
