"""A decoder-only model (a small GPT-2 built locally, MLflow transformers flavour, task text-generation)
served by the real app: concurrent prompts of different lengths are decoded as one left-padded batch and
each answer equals transformers' own greedy ``generate`` for that prompt alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from tests.helpers import in_process, wait_until
from tests.unit.serving.support import registry_run, text_settings

os.environ["HF_HUB_OFFLINE"] = "1"

PROMPTS = [
    "Lisbon , Monday . Acme said",
    "Oslo , Friday . Hooli said on Friday that it will buy 4 startups in Oslo . Analysts",
    "Quito",
]


@pytest.fixture(scope="module")
def gpt(text_model_dir: Path):  # noqa: ANN201
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(text_model_dir)  # the summarizer's tokenizer: pad, eos, 512
    torch.manual_seed(3)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=512,
            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
    ).eval()  # fmt: skip
    with torch.no_grad():  # untrained: never pick a special token (write until max_tokens)
        for tid in tok.all_special_ids:
            model.transformer.wte.weight[tid].zero_()
    return model, tok


@pytest.fixture(scope="module")
async def served(gpt, tmp_path_factory):  # noqa: ANN001, ANN201
    import mlflow
    import mlflow.transformers

    model, tok = gpt
    tmp = tmp_path_factory.mktemp("text-gpt")
    with registry_run(tmp, "gpt") as (uri, client):
        mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tok},
            name="model",
            task="text-generation",
            registered_model_name="writer",
            pip_requirements=["transformers", "torch"],  # no requirement inference (it imports torchvision)
        )
    client.set_registered_model_alias("writer", "champion", "1")
    settings = text_settings(tmp, uri, "writer", runtime="native")
    os.environ["SERVING_TEXT_BATCH_WAIT_MS"] = "300"  # read at load: the three prompts make one batch
    try:
        app = create_app(settings, secrets=EnvSecretsBackend({}))
        async with in_process(app, "http://t") as http:
            await wait_until(app.state.repository.ready, 120)
            yield app, http
    finally:
        os.environ.pop("SERVING_TEXT_BATCH_WAIT_MS", None)


async def test_left_padded_batch_equals_each_prompt_alone(served, gpt) -> None:  # noqa: ANN001
    import torch

    app, http = served
    model, tok = gpt
    scheduler = app.state.repository.get("writer").model.runtime.scheduler
    assert not scheduler.encoder_decoder
    scheduler.batches.clear()

    async def one(prompt: str, n: int) -> str:
        body = {"text_input": prompt, "parameters": {"max_tokens": n}}
        r = await http.post("/v2/models/writer/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json()["text_output"]

    jobs = [(p, 4 + 3 * i) for i, p in enumerate(PROMPTS)]
    outs = await asyncio.gather(*(one(p, n) for p, n in jobs))
    for (prompt, n), got in zip(jobs, outs, strict=True):
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            ref = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        want = tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert got == want, (prompt, got, want)
    assert max(scheduler.batches) == 3, scheduler.batches
    # the prompt plus max_tokens must fit the context of a decoder-only model
    r = await http.post(
        "/v2/models/writer/generate", json={"text_input": "Quito", "parameters": {"max_tokens": 512}}
    )
    assert r.status_code == 422 and "minus max_tokens 512" in r.json()["error"]


async def test_v2_infer_leaves_room_for_what_it_generates_and_takes_zero_rows(served, gpt) -> None:  # noqa: ANN001
    """V2 infer writes default_max_tokens after the prompt: a prompt that fits the context alone but not
    with them is a 422 (the model would fail past its position table); a zero-row request answers at once."""
    from mlplatform.training.text import article_of_tokens

    app, http = served
    _, tok = gpt
    room = 512 - app.state.repository.get("writer").model.runtime.default_max_tokens
    long = next(
        t for n in range(room, room + 20) if len(tok(t := article_of_tokens(tok, n))["input_ids"]) > room
    )
    assert len(tok(long)["input_ids"]) <= 512  # it would fit without the generated tokens
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [long]}]}
    r = await http.post("/v2/models/writer/infer", json=body)
    assert (
        r.status_code == 422 and "element 0" in r.json()["error"] and "minus max_tokens" in r.json()["error"]
    )
    empty = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [0], "data": []}]}
    r = await asyncio.wait_for(http.post("/v2/models/writer/infer", json=empty), 30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [0] and r.json()["outputs"][0]["data"] == []
