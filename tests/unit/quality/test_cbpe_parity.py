"""CBPE parity with NannyML 0.13.1 itself: the same per-chunk estimates and the same calibration decision.

NannyML runs in its own environment (``make nannyml-venv``, pinned in requirements/nannyml.txt) on
the parquet file this test writes; ``nannyml_cbpe.py`` prints its estimates. The test fails (not
skips) when that environment is missing: ``make test`` builds it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.quality.cbpe import CBPE

ROOT = Path(__file__).resolve().parents[3]
NANNYML_PY = ROOT / ".venv-nannyml" / "bin" / "python"
SCRIPT = Path(__file__).with_name("nannyml_cbpe.py")
CHUNK = 1000
OURS = {"average_precision": "pr_auc"}


def _population(
    rng: np.random.Generator, n: int, shift: float, slope: float, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(shift, 1.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * x - 3.0)))).astype(np.int64)
    p = 1 / (1 + np.exp(-(slope * x - offset)))  # slope 2, offset 3: the true probability
    return p, y


def _scenario(seed: int, slope: float, offset: float, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p_ref, y_ref = _population(rng, 5000, 0.0, slope, offset)
    p_ana, y_ana = _population(rng, 4000, shift, slope, offset)
    frame = pd.DataFrame(
        {
            "period": ["reference"] * len(p_ref) + ["analysis"] * len(p_ana),
            "p": np.r_[p_ref, p_ana],
            "y": np.r_[y_ref, y_ana],
        }
    )
    frame["y_pred"] = (frame["p"] >= 0.5).astype(np.int64)
    return frame


@pytest.mark.parametrize(
    ("seed", "slope", "offset", "shift", "calibrates"),
    [(3, 1.3, 2.5, 0.7, True), (4, 2.0, 3.0, -0.5, False), (5, 1.0, 2.0, 0.0, True)],
    ids=["miscalibrated-shifted", "calibrated-shifted", "flat-scores"],
)
def test_cbpe_estimates_equal_nannyml(tmp_path, seed, slope, offset, shift, calibrates):
    assert NANNYML_PY.exists(), "NannyML environment missing: run `make nannyml-venv`"
    frame = _scenario(seed, slope, offset, shift)
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    out = subprocess.run(
        [str(NANNYML_PY), str(SCRIPT), str(path), str(CHUNK)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    theirs = json.loads(out.stdout)
    ref = frame[frame.period == "reference"]
    ana = frame[frame.period == "analysis"]["p"].to_numpy()
    cbpe = CBPE(threshold=0.5).fit(ref["p"].to_numpy(), ref["y"].to_numpy())
    assert cbpe.calibrated == theirs["needs_calibration"] == calibrates
    assert len(theirs["chunks"]) == len(ana) // CHUNK
    for chunk in theirs["chunks"]:
        ours = cbpe.estimate(ana[chunk["start"] : chunk["end"] + 1])
        for metric in ("precision", "recall", "f1", "roc_auc", "average_precision", "accuracy"):
            assert ours[OURS.get(metric, metric)] == pytest.approx(chunk[metric], abs=1e-9), (metric, chunk)
