"""The demo summarizer: generated data, a locally trained tokenizer, a T5 model, the MLflow round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlplatform.training.text import CONTEXT_LENGTH, generate_articles, train_tokenizer

os.environ["HF_HUB_OFFLINE"] = "1"


def test_articles_are_deterministic_and_summaries_name_the_facts() -> None:
    a, b = generate_articles(20, seed=3), generate_articles(20, seed=3)
    assert a == b
    assert a != generate_articles(20, seed=4)
    for art in a:
        company, _, verb, count, obj, _, city = art.summary.split(" ")
        assert f"{company} said" in art.text and f"will {verb} {count} {obj} in {city}" in art.text


def test_tokenizer_t5_conventions_and_round_trip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    texts = [a.text for a in generate_articles(300, seed=1)]
    tok = train_tokenizer(texts, vocab_size=400)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok(texts[0])["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == texts[0]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(texts[1])["input_ids"] == tok(texts[1])["input_ids"]
    assert again.model_max_length == CONTEXT_LENGTH


def test_built_model_loads_and_generates(text_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(text_model_dir)
    assert model.config.model_type == "t5"
    enc = tok(["Lisbon , Monday . Acme said it will open 3 stores in Lisbon ."], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and 1 < out.shape[1] <= 6
    assert out[0, 0].item() == model.config.decoder_start_token_id


def test_a_few_training_steps_lower_the_loss(tmp_path: Path, text_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mlplatform.training.text import build_text_model

    def loss(path: Path) -> float:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
        batch = generate_articles(16, seed=99)
        enc = tok([a.text for a in batch], padding=True, return_tensors="pt")
        labels = tok([a.summary for a in batch], padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tok.pad_token_id] = -100
        with torch.no_grad():
            return float(model(**enc, labels=labels).loss)

    trained = build_text_model(tmp_path / "b", steps=4, batch_size=16)  # same seed: same tokenizer
    assert loss(trained) < loss(text_model_dir) - 0.5


def test_mlflow_transformers_round_trip(text_registry) -> None:
    import mlflow.transformers

    from mlplatform.core.registry import mlflow_client
    from mlplatform.training.pipeline import mlflow_uri

    client = mlflow_client(text_registry.tracking_uri)
    mv = client.get_model_version_by_alias("summarizer", "champion")
    assert str(mv.version) == text_registry.summary["version"]
    uri = client.get_model_version_download_uri("summarizer", mv.version)
    with mlflow_uri(text_registry.tracking_uri):
        pipe = mlflow.transformers.load_model(uri)
    assert pipe.task == "text2text-generation"
    out = pipe(["Oslo , Friday . Hooli said it will buy 4 startups in Oslo ."], max_new_tokens=4)
    assert isinstance(out[0]["generated_text"], str)


@pytest.mark.parametrize("n", [50, 200])
def test_article_of_tokens_has_the_requested_length(text_model_dir: Path, n: int) -> None:
    from transformers import AutoTokenizer

    from mlplatform.training.text import article_of_tokens

    tok = AutoTokenizer.from_pretrained(text_model_dir)
    assert abs(len(tok(article_of_tokens(tok, n))["input_ids"]) - n) <= 2
