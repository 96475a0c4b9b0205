"""A text explainer validates requests on the event loop while SHAP runs in a worker thread.

HF fast tokenizers are not thread-safe: a call that changes padding or truncation (SHAP's teacher
forcing pads its batches) while another thread encodes raises ``RuntimeError: Already borrowed``.
Validation therefore tokenizes with its own copy of the tokenizer; the test drives both at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlplatform.core.errors import InvalidInput
from mlplatform.explain.text import TextModel, TextShapExplainer
from mlplatform.text.limits import context_length

TEXTS = [
    "Lisbon , Monday . Acme said on Monday that it will open 12 stores in Lisbon .",
    "Oslo , Friday . Hooli said on Friday that it will buy 4 startups in Oslo .",
]


@pytest.fixture(scope="module")
def explainer(text_model_dir: Path) -> TextShapExplainer:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(text_model_dir)
    limit = context_length(tok, model.config)
    assert limit is not None
    text_model = TextModel("summarizer", "1", "text2text-generation", model, tok, limit, 4)
    explainer = TextShapExplainer(text_model, SimpleNamespace(device="cpu", text_batch_size=8))
    explainer.load()
    return explainer


def test_validating_while_an_explanation_runs(explainer: TextShapExplainer) -> None:
    errors: list[BaseException] = []
    explained = []
    stop = threading.Event()

    def explain() -> None:
        try:
            while not stop.is_set():
                explained.append(explainer.explain(TEXTS, max_evals=40, max_tokens=3))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=explain)
    worker.start()
    deadline = time.monotonic() + 10
    checks = 0
    try:
        while time.monotonic() < deadline and not errors and len(explained) < 3:  # text_request's calls
            for text in TEXTS:
                assert explainer.count_tokens(text) > 10
                assert explainer.output_ids(text)
                checks += 1
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    assert len(explained) >= 2 and checks > 100


def test_unloading_during_an_explanation_lets_it_finish(explainer: TextShapExplainer) -> None:
    """unload waits for a running explanation (the data plane calls it in a worker thread, off the
    event loop), which finishes normally; an explanation after it is a 422 naming the reason."""
    results: list = []
    worker = threading.Thread(
        target=lambda: results.append(explainer.explain(TEXTS, max_evals=300, max_tokens=6))
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not explainer._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        explainer.unload()
    finally:
        worker.join()
    assert len(results) == 1 and len(results[0]) == len(TEXTS)
    assert explainer._teacher is None and explainer._masker is None
    with pytest.raises(InvalidInput, match="'summarizer' version 1: its explainer was unloaded"):
        explainer.explain(TEXTS, max_evals=40, max_tokens=3)
    explainer.load()  # for the module's other tests
