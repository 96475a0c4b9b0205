"""Free-text columns in drift detection, as Evidently 0.7.23's DataDriftPreset treats them by default.

**Type inference** (``evidently.core.datasets.infer_column_type``, run on the current window like every
other column): a column of strings (pandas ``string``/``str`` dtype, or ``object`` whose first and last
non-missing values are ``str``) is *text* when it has more distinct values than half its non-missing
values, else categorical (chi-square / Jensen-Shannon in :mod:`mlplatform.drift.stats`).

**Drift method** (``legacy/calculations/stattests/registry.py:_get_default_stattest`` and
``legacy/utils/data_drift_utils.py:calculate_text_drift_score``): a domain classifier. Reference texts
(label 0) and current texts (label 1) are shuffled and split in halves (``train_test_split``,
``test_size=0.5``, ``random_state=42``); a TF-IDF (sublinear tf, ``max_df=0.5``, English stop words) +
L1 ``SGDClassifier`` (modified Huber loss, ``alpha=1e-4``, 50 iterations, ``random_state=42``) learns
to tell them apart on one half; its ROC AUC on the other half is the drift score:

===========================  =============================  ========================================
reference texts              method                         drifted if
===========================  =============================  ========================================
> 1000                       ``abs_text_content_drift``     AUC > 0.55 (the threshold)
<= 1000                      ``perc_text_content_drift``    AUC > the 95th percentile (``100 *
                                                            threshold``, threshold 0.95) of the AUCs
                                                            of 1000 random scorers on the same test
                                                            labels (numpy seeds drawn from seed 42)
===========================  =============================  ========================================

Every random choice is seeded as Evidently seeds it, so the score and the decision are reproducible
and equal Evidently's (``tests/unit/drift/test_text_parity.py``). The random scorers' percentile depends
only on the reference and current sizes: it is computed once per size pair, vectorised (rank-sum AUCs of
the same 1000 seeded draws), without touching numpy's global random state.

**Descriptors** (the seeds' text descriptors, Evidently's ``TextLength``,
``NonLetterCharacterPercentage`` and ``OOVWordsPercentage`` as shares rather than percentages), averaged
per window and exported as ``mlplatform_drift_text_descriptor``:

* ``length``: characters per text;
* ``non_letter_share``: share of characters that are neither letters nor spaces (0 for an empty text);
* ``oov_share``: share of words not in the vocabulary. Words as Evidently splits them (drop everything
  but ASCII letters, digits and whitespace, split, lower-case; Evidently drops newlines too and so joins
  the words around them: here they separate words). No word list ships on this machine (no
  ``/usr/share/dict``; nltk's ``words`` corpus and WordNet lemmatizer are downloads), so the vocabulary is
  the words of the reference's even rows; the reference's own value is measured on its odd rows, so
  both windows are measured out of sample against the same vocabulary and compare like for like.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger("mlplatform.drift.text")

TEXT = "text"
#: a string column is text when it has more distinct values than this share of its values
TEXT_UNIQUE_SHARE = 0.5
SMALL_REFERENCE_ROWS = 1000
ABS = "abs_text_content_drift"
PERC = "perc_text_content_drift"
#: Evidently's registered name -> (display name, default threshold, kind): both scores are ROC AUCs
METHODS: dict[str, tuple[str, float, str]] = {
    ABS: ("Absolute text content drift", 0.55, "auc"),
    PERC: ("Percentile text content drift", 0.95, "auc"),
}
RANDOM_SCORERS = 1000
SEED = 42
DESCRIPTORS = ("length", "oov_share", "non_letter_share")


def is_string_column(values: pd.Series) -> bool:
    """Evidently's test for a string column: ``string``/``str`` dtype, or ``object`` whose first and
    last non-missing values are strings."""
    if values.dtype.name in ("string", "str"):
        return True
    if values.dtype.name != "object":
        return False
    present = values.dropna()
    return len(present) > 0 and isinstance(present.iloc[0], str) and isinstance(present.iloc[-1], str)


def is_text(values: pd.Series) -> bool:
    """True for a free-text column: a string column with more distinct values than half its values."""
    return is_string_column(values) and values.nunique() > values.count() * TEXT_UNIQUE_SHARE


def select_method(ref_rows: int) -> str:
    """Evidently's default text method for a reference of ``ref_rows`` non-missing texts."""
    return ABS if ref_rows > SMALL_REFERENCE_ROWS else PERC


@dataclass(frozen=True)
class TextDrift:
    """The domain classifier's verdict on one text column."""

    method: str
    statistic: float  # ROC AUC of the domain classifier on its test half
    threshold: float  # Evidently's threshold parameter (0.55 for abs, 0.95 for perc)
    cutoff: float  # the AUC the statistic must exceed: the threshold, or the random scorers' percentile
    drifted: bool


def _split(
    n_ref: int, n_cur: int, texts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels = np.r_[np.zeros(n_ref, dtype=np.int64), np.ones(n_cur, dtype=np.int64)]
    return train_test_split(texts, labels, test_size=0.5, random_state=SEED, shuffle=True)


def domain_classifier_auc(reference: Sequence[str], current: Sequence[str]) -> float:
    """ROC AUC of Evidently's TF-IDF + SGD domain classifier telling current from reference texts.

    Raises ValueError when it cannot be computed (every word a stop word or in more than half the
    texts, or a test half holding one side only), as Evidently does."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import Pipeline

    texts = np.array([*reference, *current], dtype=object)
    x_train, x_test, y_train, y_test = _split(len(reference), len(current), texts)
    pipeline = Pipeline(
        [
            ("vectorization", TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english")),
            (
                "classification",
                SGDClassifier(
                    alpha=0.0001, max_iter=50, penalty="l1", loss="modified_huber", random_state=SEED
                ),
            ),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Evidently's 50 iterations, on purpose
        pipeline.fit(x_train, y_train)
    return float(roc_auc_score(y_test, pipeline.predict_proba(x_test)[:, 1]))


@functools.lru_cache(maxsize=64)
def random_auc_percentile(n_ref: int, n_cur: int, p_value: float) -> float:
    """Evidently's ``roc_auc_random_classifier_percentile`` for the test labels of ``n_ref`` reference
    and ``n_cur`` current texts: the ``100 * (1 - p_value)`` percentile of the ROC AUCs of 1000 uniform
    random scorers, each seeded as Evidently seeds it (``np.random.seed(s)`` for ``s`` drawn after
    ``np.random.seed(42)``), computed as rank sums, 100 scorers at a time."""
    _, _, _, y_test = _split(n_ref, n_cur, np.arange(n_ref + n_cur))
    positives = y_test == 1
    n_pos = int(positives.sum())
    n_neg = len(y_test) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the domain classifier's test half holds one side only; too few texts")
    seeds = np.random.RandomState(SEED).randint(0, RANDOM_SCORERS * 10, size=RANDOM_SCORERS)
    aucs = np.empty(len(seeds))
    for start in range(0, len(seeds), 100):  # 100 scorers at a time: memory stays 100 x test rows
        chunk = seeds[start : start + 100]
        scores = np.stack([np.random.RandomState(s).rand(len(y_test)) for s in chunk])
        ranks = stats.rankdata(scores, axis=1)
        aucs[start : start + len(chunk)] = (ranks[:, positives].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (
            n_pos * n_neg
        )
    return float(np.percentile(aucs, 100 * (1 - p_value)))


def text_drift(reference: Sequence[str], current: Sequence[str], threshold: float | None = None) -> TextDrift:
    """Drift of a text column with Evidently's default method and threshold (see the module docstring).

    ``reference`` and ``current`` hold the non-missing texts, in row order (the order decides the
    split, as in Evidently)."""
    method = select_method(len(reference))
    threshold = METHODS[method][1] if threshold is None else threshold
    auc = domain_classifier_auc(reference, current)
    if method == ABS:
        cutoff = threshold
    else:
        cutoff = random_auc_percentile(len(reference), len(current), 1 - threshold)
    return TextDrift(method, auc, threshold, cutoff, bool(auc > cutoff))


# -- descriptors ---------------------------------------------------------------------------------
_NOT_WORD = re.compile(r"[^A-Za-z0-9\s]+")


def words(text: str) -> list[str]:
    """Lower-cased words as Evidently's OOV descriptor splits them (see the module docstring)."""
    return _NOT_WORD.sub("", text).lower().split()


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """Every word of ``texts``."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(words(text))
    return frozenset(vocab)


def length(text: str) -> int:
    return len(text)


def non_letter_share(text: str) -> float:
    """Share of characters that are neither letters nor spaces (Evidently's percentage / 100)."""
    if not text:
        return 0.0
    return sum(1 for ch in text if not ch.isalpha() and ch != " ") / len(text)


def oov_share(text: str, vocab: frozenset[str]) -> float:
    """Share of the words of ``text`` not in ``vocab`` (0 for a text without words)."""
    found = words(text)
    if not found:
        return 0.0
    return sum(1 for w in found if w not in vocab) / len(found)


def descriptor_means(
    texts: Sequence[str], vocab: frozenset[str], oov_texts: Sequence[str] | None = None
) -> dict[str, float]:
    """Mean ``length``, ``oov_share`` and ``non_letter_share`` of ``texts`` (``oov_share`` over
    ``oov_texts`` when given)."""
    if not texts:
        return {}
    oov = texts if oov_texts is None else oov_texts
    return {
        "length": float(np.mean([len(t) for t in texts])),
        "oov_share": float(np.mean([oov_share(t, vocab) for t in oov])) if len(oov) else 0.0,
        "non_letter_share": float(np.mean([non_letter_share(t) for t in texts])),
    }


class ReferenceText:
    """A reference text column's vocabulary (its even rows' words) and its descriptor means."""

    def __init__(self, texts: Sequence[str]) -> None:
        texts = list(texts)
        self.vocabulary = vocabulary(texts[0::2])
        held_out = texts[1::2] or texts
        self.means = descriptor_means(texts, self.vocabulary, held_out)

    def compare(self, current: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{descriptor: {"reference": mean, "current": mean}}`` for a current window."""
        cur = descriptor_means(current, self.vocabulary)
        return {d: {"reference": self.means[d], "current": cur[d]} for d in DESCRIPTORS if d in cur}
