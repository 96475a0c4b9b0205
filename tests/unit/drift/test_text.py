"""Text columns in drift detection: type inference, method choice, the domain classifier, descriptors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.drift import stats, text
from mlplatform.drift.detector import DriftDetector
from tests.unit.drift.text_corpora import docstrings, halves, licenses, sample


def _series_cases() -> dict[str, pd.Series]:
    docs = list(docstrings()[:40])
    return {
        "unique_text": pd.Series(docs, dtype=object),
        "half_distinct": pd.Series(docs[:20] * 2, dtype=object),  # 20 distinct of 40: not more than half
        "just_over_half": pd.Series(docs[:21] + docs[:19], dtype=object),
        "few_values": pd.Series(["a", "b", "c", "a"] * 10, dtype=object),
        "with_missing": pd.Series(docs[:10] + [None] * 30, dtype=object),  # 10 distinct of 10 present
        "string_dtype": pd.Series(docs, dtype="string"),
        "string_dtype_repeats": pd.Series(["x", "y"] * 20, dtype="string"),
        "floats": pd.Series(np.linspace(0, 1, 40)),
        "ints_many": pd.Series(np.arange(40)),
        "ints_few": pd.Series(np.arange(40) % 3),
        "bools": pd.Series([True, False] * 20),
    }


@pytest.mark.parametrize("name", list(_series_cases()))
def test_column_types_follow_evidentlys_inference(name: str) -> None:
    from evidently.core.datasets import infer_column_type

    values = _series_cases()[name]
    assert stats.infer_column_type(values) == infer_column_type(values).value  # "num", "cat", "text"


def test_method_follows_reference_size() -> None:
    assert text.select_method(1000) == text.PERC
    assert text.select_method(1001) == text.ABS
    assert stats.METHODS[text.PERC][:2] == ("Percentile text content drift", 0.95)
    assert stats.METHODS[text.ABS][:2] == ("Absolute text content drift", 0.55)


def test_domain_classifier_separates_sources_and_not_halves() -> None:
    ref, cur = halves(docstrings(), 300, 150, seed=3)
    same = text.text_drift(ref, cur)
    other = text.text_drift(ref, sample(licenses(), 150, seed=3))
    assert same.method == other.method == text.PERC
    assert not same.drifted and same.statistic < same.cutoff
    assert other.drifted and other.statistic > 0.9
    assert 0.5 < same.cutoff < 0.6  # the random scorers' 95th percentile for 225 test texts
    # seeded: the same texts give the same score
    assert text.text_drift(ref, cur) == same


def test_text_drift_refuses_what_evidently_cannot_compute() -> None:
    with pytest.raises(ValueError, match="empty vocabulary"):
        text.text_drift(["the and of"] * 30, ["it is a"] * 30)
    with pytest.raises(ValueError):
        text.random_auc_percentile(1, 0, 0.05)


def test_descriptors_by_hand() -> None:
    assert text.words("Hello, World! it's 3 o'clock\nnow") == ["hello", "world", "its", "3", "oclock", "now"]
    assert text.non_letter_share("ab, c!") == pytest.approx(2 / 6)
    assert text.non_letter_share("") == 0.0
    vocab = frozenset({"hello", "world"})
    assert text.oov_share("Hello big world", vocab) == pytest.approx(1 / 3)
    assert text.oov_share("?!", vocab) == 0.0
    means = text.descriptor_means(["Hello world", "Hello big world!!"], vocab)
    assert means == pytest.approx({"length": 14.0, "oov_share": 1 / 6, "non_letter_share": 2 / 17 / 2})


def test_reference_vocabulary_is_its_even_rows_and_its_oov_is_measured_on_the_odd_ones() -> None:
    ref = text.ReferenceText(["alpha beta", "beta gamma", "alpha delta", "alpha"])
    assert ref.vocabulary == {"alpha", "beta", "delta"}
    assert ref.means["oov_share"] == pytest.approx((1 / 2 + 0) / 2)  # "gamma" unseen; "alpha" seen
    assert ref.means["length"] == pytest.approx(np.mean([10, 10, 11, 5]))
    out = ref.compare(["alpha omega", "zeta"])
    assert out["oov_share"] == {"reference": pytest.approx(0.25), "current": pytest.approx(0.75)}


def test_descriptors_equal_evidentlys_on_real_text() -> None:
    """Evidently's TextLength, NonLetterCharacterPercentage and OOVWordsPercentage (as shares) on single-line
    licence paragraphs; OOV against our vocabulary with an identity lemmatizer (WordNet is a download)."""
    from evidently.legacy.features.non_letter_character_percentage_feature import NonLetterCharacterPercentage
    from evidently.legacy.features.OOV_words_percentage_feature import OOVWordsPercentage
    from evidently.legacy.features.text_length_feature import TextLength

    class Identity:
        def lemmatize(self, word: str) -> str:
            return word

    texts = sample(licenses(), 60, seed=9)
    vocab = text.vocabulary(sample(docstrings(), 300, seed=9))
    oov = OOVWordsPercentage("t")
    oov._lem = Identity()
    oov._eng_words = set(vocab)
    for t in texts:
        assert text.length(t) == TextLength("t").apply(t)
        assert text.non_letter_share(t) == pytest.approx(NonLetterCharacterPercentage("t").apply(t) / 100)
        assert text.oov_share(t, vocab) == pytest.approx(oov.apply(t) / 100)
    assert len({text.oov_share(t, vocab) for t in texts}) > 10  # not a constant


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # chi-square: texts new to the reference
def test_dataset_drift_reports_text_columns_with_descriptors() -> None:
    ref_docs, cur_docs = halves(docstrings(), 200, 100, seed=5)
    reference = pd.DataFrame({"text_input": ref_docs, "score": np.linspace(0, 1, 200)})
    current = pd.DataFrame({"text_input": sample(licenses(), 100, seed=5), "score": np.linspace(0, 1, 100)})
    result = stats.dataset_drift(stats.PreparedReference(reference), current, ["text_input", "score"])
    out = stats.as_json(result)["features"]
    assert out["score"]["column_type"] == "numerical" and "descriptors" not in out["score"]
    col = out["text_input"]
    assert col["column_type"] == "text" and col["method"] == text.PERC and col["drifted"]
    assert col["method_display_name"] == "Percentile text content drift" and col["psi"] is None
    assert col["cutoff"] == text.random_auc_percentile(200, 100, 1 - 0.95)
    lengths = col["descriptors"]["length"]
    assert lengths == {
        "reference": pytest.approx(np.mean([len(t) for t in ref_docs])),
        "current": pytest.approx(np.mean([len(t) for t in current["text_input"]])),
    }
    assert set(col["descriptors"]) == {"length", "oov_share", "non_letter_share"}
    # licences use words docstrings do not: more out of vocabulary than the reference's held-out rows
    assert col["descriptors"]["oov_share"]["current"] > col["descriptors"]["oov_share"]["reference"]
    # the same window with repeated texts is categorical again (Evidently's rule), chi-square
    repeated = pd.DataFrame({"text_input": cur_docs[:10] * 10, "score": np.linspace(0, 1, 100)})
    again = stats.dataset_drift(stats.PreparedReference(reference), repeated, ["text_input", "score"])
    assert again.columns["text_input"].column_type == stats.CATEGORICAL
    assert again.columns["text_input"].method == "chisquare"


def test_detector_takes_text_outputs_and_unwraps_one_element_rows(tmp_path) -> None:  # noqa: ANN001
    det = DriftDetector("summarizer", "1", tmp_path)
    det.load_frame(pd.DataFrame({"text_input": ["a b", "c d"], "text_output": ["a", "c"]}))
    assert det.features == ["text_input", "text_output"]
    row = det.columns_of({"text_input": ["long text"]}, {"text_output": ["short"], "other": 1})
    assert row == {"text_input": "long text", "text_output": "short"}
    det.validate([row])
    tabular = DriftDetector("fraud", "1", tmp_path)
    tabular.load_frame(pd.DataFrame({"amount": [1.0], "prediction": [0.5]}))
    inputs = {"amount": 2.0}
    assert tabular.columns_of(inputs, {"fraud_probability": 0.3}) is inputs  # no copy on the tabular path


def test_the_summarizers_reference_is_text_and_fresh_articles_do_not_drift() -> None:
    """What training logs as the summarizer's reference: two text columns; new articles from the same
    generator do not drift, licence paragraphs do."""
    from mlplatform.training.text import generate_articles, text_reference

    reference = text_reference()
    assert list(reference.columns) == ["text_input", "text_output"]
    assert [stats.infer_column_type(reference[c]) for c in reference] == [stats.TEXT, stats.TEXT]
    fresh = generate_articles(200, seed=77)
    current = pd.DataFrame({"text_input": [a.text for a in fresh], "text_output": [a.summary for a in fresh]})
    prepared = stats.PreparedReference(reference)
    calm = stats.dataset_drift(prepared, current, ["text_input", "text_output"])
    assert [calm.columns[c].column_type for c in calm.feature_names] == [stats.TEXT, stats.TEXT]
    assert not calm.dataset_drift, stats.as_json(calm)
    foreign = current.assign(text_input=sample(licenses(), 200, seed=77))
    assert stats.dataset_drift(prepared, foreign, ["text_input", "text_output"]).columns["text_input"].drifted
