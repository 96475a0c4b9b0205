"""Benchmark text-column drift (drift/text.py) against Evidently 0.7.23 on real English text.

For a small reference (800 texts: ``perc_text_content_drift``, the domain classifier against 1000
seeded random scorers) and a large one (2000 texts: ``abs_text_content_drift``), with 400 current
texts each (licence paragraphs: a drifted window; docstrings: an undrifted one): seconds per column
for ``text.text_drift`` (first window of a size pair, which computes the random scorers' percentile,
and later ones, which reuse it) versus Evidently's ``calculate_text_drift_score`` (what its
DataDriftPreset runs per text column), the ROC AUC difference and whether the decisions agree; and the
seconds the three descriptor means take per window. Medians of 3 runs.

Texts: the standard library's docstrings and /usr/share/common-licenses (tests/unit/drift/text_corpora.py).

Run: .venv/bin/python scripts/bench/bench_drift_text.py   (part of ``make bench``)
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.timing import median_time  # noqa: E402

RUNS = 3
CURRENT = 400


def main() -> None:
    import pandas as pd
    from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score
    from tests.unit.drift.text_corpora import docstrings, halves, licenses, sample

    from mlplatform.drift import text

    warnings.simplefilter("ignore")
    print(f"{'reference':>9} {'window':>8} {'method':>24} {'ours first s':>12} {'ours s':>8} "
          f"{'evidently s':>11} {'ratio':>6} {'|dAUC|':>8} {'same decision':>13}")  # fmt: skip
    for n_ref in (800, 2000):
        ref, same = halves(docstrings(), n_ref, CURRENT, seed=n_ref)
        other = sample(licenses(), CURRENT, seed=n_ref)
        for name, cur in (("drifted", other), ("same", same)):
            text.random_auc_percentile.cache_clear()
            t0 = time.perf_counter()
            text.text_drift(ref, cur)
            first = time.perf_counter() - t0
            ours_s, ours = median_time(lambda: text.text_drift(ref, cur), RUNS)  # noqa: B023
            bootstrap = n_ref <= text.SMALL_REFERENCE_ROWS
            ev_s, ev = median_time(
                lambda: calculate_text_drift_score(pd.Series(ref), pd.Series(cur), bootstrap=bootstrap),  # noqa: B023
                RUNS,
            )
            auc, drifted = ev
            print(
                f"{n_ref:>9} {name:>8} {ours.method:>24} {first:>12.3f} {ours_s:>8.3f} {ev_s:>11.3f} "
                f"{ev_s / ours_s:>6.1f} {abs(ours.statistic - auc):>8.1e} {str(ours.drifted == bool(drifted)):>13}"
            )
    ref_text = text.ReferenceText(sample(docstrings(), 2000, seed=1))
    window = sample(licenses(), CURRENT, seed=1)
    desc_s, _ = median_time(lambda: ref_text.compare(window), RUNS)
    print(f"descriptor means of a {CURRENT}-text window: {desc_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
