"""/explain for text models: token attributions of real tiny T5 models through the real explain app.

Two models in a real MLflow (SQLite), MLflow ``transformers`` flavour, registered the way training
registers the demo summarizer: the demo ``summarizer@champion`` itself (the session's untrained
build, ``text_registry`` in tests/conftest.py) and a tiny T5 trained to copy the one colour word of
its input (``text_models.py``). The explained quantities are recomputed here from the saved weights
with transformers directly, not through the service's code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplatform.training.text import SUMMARIZER_MODEL_NAME, generate_articles, log_and_register_text_model
from tests.unit.explain.conftest import RunningApp, explain_settings, running
from tests.unit.explain.text_models import build_keyword_model, build_tiny_gpt2, register_text_generation

KEYWORD_MODEL = "colour-copier"
CAUSAL_MODEL = "tiny-gpt2"


@dataclass
class TextRegistry:
    tracking_uri: str
    dirs: dict[str, Path]  # the save_pretrained directories that were registered
    versions: dict[str, str]


@pytest.fixture(scope="module")
def text_models(text_registry, text_model_dir, tmp_path_factory) -> TextRegistry:
    """The session's ``summarizer@champion`` registry (tests/conftest.py) plus the colour copier."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    keyword = base / "colour_copier"
    done = base / "colour_copier_version.txt"
    causal = base / "tiny_gpt2"
    causal_done = base / "tiny_gpt2_version.txt"
    with FileLock(str(base / "colour_copier.lock")):
        if not done.exists():
            build_keyword_model(keyword)
            done.write_text(
                log_and_register_text_model(keyword, text_registry.tracking_uri, name=KEYWORD_MODEL)
            )
        if not causal_done.exists():
            build_tiny_gpt2(causal)
            causal_done.write_text(register_text_generation(causal, text_registry.tracking_uri, CAUSAL_MODEL))
    return TextRegistry(
        text_registry.tracking_uri,
        {SUMMARIZER_MODEL_NAME: text_model_dir, KEYWORD_MODEL: keyword, CAUSAL_MODEL: causal},
        {
            SUMMARIZER_MODEL_NAME: text_registry.summary["version"],
            KEYWORD_MODEL: done.read_text(),
            CAUSAL_MODEL: causal_done.read_text(),
        },
    )


@pytest.fixture(scope="module")
async def text_app(text_models, tmp_path_factory) -> AsyncIterator[RunningApp]:
    models = f"{SUMMARIZER_MODEL_NAME},{KEYWORD_MODEL},{CAUSAL_MODEL}"
    data_dir = tmp_path_factory.mktemp("explain-text-app")
    async with running(explain_settings(data_dir, text_models.tracking_uri, models)) as app:
        yield app


@pytest.fixture
def text_client(text_app) -> httpx.AsyncClient:
    return text_app.client


def text_body(*texts: Any, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "text_input", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}]
    }
    if parameters:
        body["parameters"] = parameters
    return body


@contextlib.contextmanager
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reference_logodds(model_dir: Path, text: str, max_new_tokens: int) -> tuple[list[int], np.ndarray, Any]:
    """Greedy output ids of ``text`` and each output token's log-odds given ``text`` (teacher forcing),
    computed with transformers from the saved weights; also returns a function for other inputs."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    with torch.no_grad(), _one_thread():
        enc = tok([text], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)[0].tolist()
    ids = out[1:]  # the decoder start token
    if tok.eos_token_id in ids:
        ids = ids[: ids.index(tok.eos_token_id)]

    def logodds(source: str) -> np.ndarray:
        with torch.no_grad(), _one_thread():
            enc = tok([source], return_tensors="pt")
            dec = torch.tensor([[model.config.decoder_start_token_id, *ids]])
            logits = model(**enc, decoder_input_ids=dec).logits[0, :-1].double()
            logp = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids)), torch.tensor(ids)]
            return (logp - torch.log(-torch.expm1(logp))).numpy()

    return ids, logodds(text), logodds


async def test_summarizer_token_attributions_add_up_to_the_model_output(text_client, text_models):
    text = generate_articles(1, seed=11, filler_sentences=(1, 1))[0].text
    r = await text_client.post(
        f"/v2/models/{SUMMARIZER_MODEL_NAME}/explain", json=text_body(text, max_tokens=6)
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == text_models.versions[SUMMARIZER_MODEL_NAME]
    assert (doc["explainer"], doc["output_space"], doc["max_tokens"]) == ("partition", "log_odds", 6)
    [row] = doc["explanations"]
    ids, expected, logodds = reference_logodds(text_models.dirs[SUMMARIZER_MODEL_NAME], text, 6)
    n_in, n_out = len(row["input_tokens"]), len(ids)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_models.dirs[SUMMARIZER_MODEL_NAME])
    assert n_in == len(tok(text)["input_ids"])
    assert row["output_tokens"] == [tok.decode([i]) for i in ids] and n_out > 0
    attributions = np.array(row["attributions"])
    assert attributions.shape == (n_out, n_in)
    assert len(row["base_values"]) == len(row["outputs"]) == n_out
    assert 0 < row["evaluations"] <= doc["max_evals"]
    assert np.ptp(attributions) > 1e-4, "attributions are all equal"
    # the explained quantity: each output token's log-odds given the input, as transformers computes it
    np.testing.assert_allclose(row["outputs"], expected, atol=1e-3)
    # the base value: the same with every input token masked (SHAP's text infilling: one "...")
    np.testing.assert_allclose(row["base_values"], logodds("..."), atol=1e-3)
    # efficiency of Owen values: base + sum of attributions = output, for every output token
    np.testing.assert_allclose(np.array(row["base_values"]) + attributions.sum(axis=1), expected, atol=1e-3)


async def test_a_causal_language_model_is_explained_on_the_tokens_it_generates(text_client, text_models):
    """text-generation (decoder-only): the generated continuation only, not the echoed prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "the cat sat on the mat"
    r = await text_client.post(f"/v2/models/{CAUSAL_MODEL}/explain", json=text_body(text, max_tokens=3))
    assert r.status_code == 200, r.text
    [row] = r.json()["explanations"]
    tok = AutoTokenizer.from_pretrained(text_models.dirs[CAUSAL_MODEL])
    model = AutoModelForCausalLM.from_pretrained(text_models.dirs[CAUSAL_MODEL]).eval()
    with torch.no_grad(), _one_thread():
        enc = tok([text], return_tensors="pt")
        full = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)[0]
        ids = full[enc["input_ids"].shape[1] :].tolist()
        logp = torch.log_softmax(model(full[None, :-1]).logits[0].double(), dim=-1)
        picked = logp[torch.arange(len(full) - 1), full[1:]][-len(ids) :]
    expected = (picked - torch.log(-torch.expm1(picked))).numpy()
    assert row["output_tokens"] == [tok.decode([i]) for i in ids] and len(ids) == 3
    assert row["input_tokens"] == text.split()
    attributions = np.array(row["attributions"])
    assert attributions.shape == (3, 6) and np.ptp(attributions) > 1e-4
    np.testing.assert_allclose(row["outputs"], expected, atol=1e-3)
    np.testing.assert_allclose(np.array(row["base_values"]) + attributions.sum(axis=1), expected, atol=1e-3)


async def test_the_token_that_decides_the_output_gets_the_largest_attribution(text_client):
    texts = [
        "the cat sat on the mat then blue dog ran far away",
        "red a big old dog and a cat",
        "the dog ran far away and then on the mat sat a green cat",
    ]
    r = await text_client.post(f"/v2/models/{KEYWORD_MODEL}/explain", json=text_body(*texts, max_evals=500))
    assert r.status_code == 200, r.text
    for text, row in zip(texts, r.json()["explanations"], strict=True):
        key = next(w for w in text.split() if w in ("red", "green", "blue", "amber"))
        assert row["text_output"] == key and row["output_tokens"] == [key]
        assert row["input_tokens"][: len(text.split())] == text.split()
        [attr] = row["attributions"]
        assert row["input_tokens"][int(np.argmax(attr))] == key, (row["input_tokens"], attr)
        others = [a for tok, a in zip(row["input_tokens"], attr, strict=True) if tok != key]
        assert attr[row["input_tokens"].index(key)] > 5 * max(abs(a) for a in others)


async def test_a_given_output_is_explained_against_the_word_that_contradicts_it(text_client):
    """parameters.text_output: explain "blue" for an input that says red (e.g. a sampled answer)."""
    body = text_body("the dog sat on a red mat", text_output="blue")
    r = await text_client.post(f"/v2/models/{KEYWORD_MODEL}/explain", json=body)
    assert r.status_code == 200, r.text
    [row] = r.json()["explanations"]
    assert row["text_output"] == "blue" and row["output_tokens"] == ["blue"]
    [attr] = row["attributions"]
    assert row["input_tokens"][int(np.argmin(attr))] == "red" and min(attr) < -1.0
    assert row["base_values"][0] + sum(attr) == pytest.approx(row["outputs"][0], abs=1e-3)


class _CountingTokenizer:
    """A tokenizer that records the texts it is called on (everything else is the real one's)."""

    def __init__(self, inner: Any, calls: list[Any]) -> None:
        self._inner, self._calls = inner, calls

    def __call__(self, text: Any, **kw: Any) -> Any:  # noqa: ANN401
        self._calls.append(text)
        return self._inner(text, **kw)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self._inner, name)


@pytest.mark.parametrize("name", [KEYWORD_MODEL, CAUSAL_MODEL])
async def test_a_given_output_is_tokenized_once_per_request(text_app, name, monkeypatch):
    """Validation (its length, and a decoder-only model's context check) and the explanation share the
    token ids of parameters.text_output: one tokenizer call for it per request."""
    explainer = await text_app.plane.explainer_for(name)
    calls: list[Any] = []
    monkeypatch.setattr(
        explainer, "_request_tokenizer", _CountingTokenizer(explainer._request_tokenizer, calls)
    )
    monkeypatch.setattr(explainer.model, "tokenizer", _CountingTokenizer(explainer.model.tokenizer, calls))
    output = "blue"
    body = text_body("the dog sat on a red mat", text_output=output, max_evals=20)
    r = await text_app.client.post(f"/v2/models/{name}/explain", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["explanations"][0]["text_output"].strip() == output
    assert [c for c in calls if output in (c if isinstance(c, list) else [c])] == [output]


def _field_error(r: httpx.Response, *needles: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    for needle in needles:
        assert needle in error, error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (text_body(5), ["text_input", "not a string"]),
        (
            {"inputs": [{"name": "text_input", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            ["text_input", "BYTES"],
        ),
        (text_body(""), ["text_input", "element 0 is empty"]),
        (text_body("fine", "   "), ["text_input", "element 1 is empty"]),
        (text_body("word " * 600), ["text_input", "context length", "512"]),
        (text_body("a", "b", "c", "d", "e"), ["text_input", "at most 4"]),
        (
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
            ["'text_input' is missing"],
        ),
        (text_body("Acme said", max_evals=0), ["parameters.max_evals", "between 10 and 2000"]),
        (text_body("Acme said", max_evals=100_000), ["parameters.max_evals", "between"]),
        (text_body("Acme said", max_evals="many"), ["parameters.max_evals", "integer"]),
        (text_body("Acme said", max_evals=True), ["parameters.max_evals", "integer"]),
        (text_body("Acme said", max_tokens=0), ["parameters.max_tokens", "between 1 and 64"]),
        (text_body("Acme said", max_tokens=65), ["parameters.max_tokens"]),
        (text_body("Acme said", text_output=""), ["parameters.text_output", "element 0 is empty"]),
        (text_body("Acme said", text_output=["a", "b"]), ["parameters.text_output", "2 output texts for 1"]),
        (text_body("Acme said", text_output=7), ["parameters.text_output", "string"]),
        (text_body("Acme said", text_output="word " * 100), ["parameters.text_output", "more than 64"]),
    ],
)
async def test_bad_text_input_is_a_422_naming_the_field(text_client, body, needles):
    _field_error(await text_client.post(f"/v2/models/{SUMMARIZER_MODEL_NAME}/explain", json=body), *needles)


async def test_a_causal_models_input_and_output_must_fit_its_context_together(text_client):
    """The tiny GPT-2 has 64 positions: 62 input tokens fit alone, not with 3 generated after them (a 422,
    where the model itself would fail on positions past its table)."""
    r = await text_client.post(
        f"/v2/models/{CAUSAL_MODEL}/explain", json=text_body("cat " * 62, max_tokens=3)
    )
    _field_error(r, "text_input", "62 tokens + 3 output tokens", "context length", "(64)")
    body = text_body("cat " * 62, max_tokens=2, max_evals=10)
    assert (await text_client.post(f"/v2/models/{CAUSAL_MODEL}/explain", json=body)).status_code == 200


async def test_text_models_have_no_importance_and_the_openapi_documents_the_text_response(text_client):
    _field_error(await text_client.get(f"/v2/models/{SUMMARIZER_MODEL_NAME}/importance"), "text model")
    spec = (await text_client.get("/openapi.json")).json()
    ok = spec["paths"]["/v2/models/{model_name}/explain"]["post"]["responses"]["200"]
    refs = {s["$ref"].rsplit("/", 1)[1] for s in ok["content"]["application/json"]["schema"]["anyOf"]}
    assert refs == {"ExplainResponse", "TextExplainResponse"}
    text = spec["components"]["schemas"]["TextExplanation"]["properties"]
    assert {"input_tokens", "output_tokens", "attributions", "base_values", "outputs"} <= set(text)


async def test_a_moved_alias_is_explained_with_the_new_version(text_app, text_models):
    """As serving does: when champion moves, the new version's explainer is built, then used."""
    old = text_models.versions[KEYWORD_MODEL]
    new = log_and_register_text_model(
        text_models.dirs[KEYWORD_MODEL], text_models.tracking_uri, name=KEYWORD_MODEL
    )
    assert new != old
    await text_app.app.state.dataplane.refresh()
    r = await text_app.client.post(f"/v2/models/{KEYWORD_MODEL}/explain", json=text_body("a red cat"))
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == new and r.json()["explanations"][0]["text_output"] == "red"
    r = await text_app.client.post(
        f"/v2/models/{KEYWORD_MODEL}/versions/{old}/explain", json=text_body("a red cat")
    )
    assert r.status_code == 404 and f"serving version {new}" in r.json()["error"]


def test_other_transformers_tasks_are_refused_before_loading(tmp_path):
    from mlplatform.explain.explainers import UnsupportedModel
    from mlplatform.explain.text import load_text_model

    with pytest.raises(UnsupportedModel, match="task 'text-classification'.*text2text-generation"):
        load_text_model("chat", "3", str(tmp_path), {"transformers": {"task": "text-classification"}})
