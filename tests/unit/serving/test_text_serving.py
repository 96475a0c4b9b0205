"""Text models in model-serving: the real summarizer (MLflow transformers flavour) served by the real app.

V2 infer with BYTES in and out, the generate extension (generate, generate_stream), batching of
concurrent generations (each caller gets exactly what it would get alone), bad input as a 422 naming
the field, generation metrics, payload logging of text. Reference outputs come from transformers'
own ``generate`` (greedy) on the model directory the registry was built from.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from mlplatform.training.text import article_of_tokens
from tests.helpers import in_process, wait_until
from tests.unit.serving.support import text_settings

os.environ["HF_HUB_OFFLINE"] = "1"

ARTICLES = [
    "Lisbon , Monday . Acme said on Monday that it will open 12 stores in Lisbon .",
    "Oslo , Friday . Hooli said on Friday that it will buy 4 startups in Oslo . Analysts said the move "
    "had been expected for several months .",
    "Quito , Tuesday . Wonka said on Tuesday that it will plant 30 trees in Quito .",
]


class Sink:
    """Records what the data plane hands to the payload logger."""

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def submit(self, batch: Any) -> None:  # noqa: ANN401
        self.batches.append(batch)


@pytest.fixture(scope="module")
def reference(text_model_dir: Path):  # noqa: ANN201
    """Greedy ``generate`` of transformers itself: the text each request must get."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(text_model_dir).eval()

    def generate(text: str, max_tokens: int) -> str:
        with torch.no_grad():
            out = model.generate(**tok(text, return_tensors="pt"), max_new_tokens=max_tokens, do_sample=False)
        return tok.decode(out[0], skip_special_tokens=True)

    generate.tokenizer = tok  # type: ignore[attr-defined]
    return generate


@pytest.fixture(scope="module")
async def served(text_registry, tmp_path_factory):  # noqa: ANN001, ANN201
    """The serving app with summarizer@champion, through the prepare child (runtime auto, as deployed)."""
    tmp = tmp_path_factory.mktemp("text-serving")
    settings = text_settings(tmp, text_registry.tracking_uri, "summarizer")
    sink = Sink()
    app = create_app(settings, secrets=EnvSecretsBackend({}), payload_sink=sink)
    async with in_process(app, "http://t") as client:
        await wait_until(app.state.repository.ready, 120)
        yield app, client, sink


async def test_metadata_names_the_text_tensors(served) -> None:  # noqa: ANN001
    app, client, _ = served
    r = await client.get("/v2/models/summarizer")
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["platform"] == "transformers"
    assert meta["inputs"] == [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["runtime"] == "torch"
    # prepared by the cache's child process: an entry saying torch, nothing converted
    entry = orjson.loads(
        next((app.state.repository.settings.model_cache_dir).rglob("entry.json")).read_bytes()
    )
    assert entry["runtime"] == "torch" and entry["platform"] == "transformers"


@pytest.mark.parametrize("shape", [[2], [2, 1]])
async def test_v2_infer_bytes_in_and_out(served, reference, shape) -> None:  # noqa: ANN001
    _, client, sink = served
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": shape, "data": ARTICLES[:2]}]}
    r = await client.post("/v2/models/summarizer/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "text_output" and out["datatype"] == "BYTES" and out["shape"] == [2]
    assert out["data"] == [reference(a, 32) for a in ARTICLES[:2]]
    last = sink.batches[-1]
    assert list(last.columns["text_input"]) == ARTICLES[:2]
    assert list(last.outputs["text_output"]) == out["data"]


async def test_generate_and_generate_stream_agree_with_transformers(served, reference) -> None:  # noqa: ANN001
    _, client, sink = served
    body = {"text_input": ARTICLES[0], "parameters": {"max_tokens": 6}}
    r = await client.post("/v2/models/summarizer/generate", json=body)
    assert r.status_code == 200, r.text
    want = reference(ARTICLES[0], 6)
    assert r.json() == {"model_name": "summarizer", "model_version": "1", "text_output": want}
    assert sink.batches[-1].outputs["text_output"][0] == want
    r = await client.post("/v2/models/summarizer/versions/1/generate_stream", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert len(events) >= 3  # one per token at least for a model that writes words
    assert "".join(e["text_output"] for e in events) == want
    assert all(e["model_version"] == "1" for e in events)
    assert events[-1]["finish_reason"] in ("stop", "length")
    # the finish reason says why the text ended: max_tokens, or a stop string
    r = await client.post(
        "/v2/models/summarizer/generate_stream", json={**body, "parameters": {"max_tokens": 1}}
    )
    assert [orjson.loads(line[6:]) for line in r.text.split("\n\n") if line][-1]["finish_reason"] == "length"
    stop = {"max_tokens": 6, "stop": [events[1]["text_output"].strip()]}
    r = await client.post("/v2/models/summarizer/generate_stream", json={**body, "parameters": stop})
    assert [orjson.loads(line[6:]) for line in r.text.split("\n\n") if line][-1]["finish_reason"] == "stop"
    # a stop string spanning two tokens: its first token is never streamed (held back until it is clear)
    two = (events[1]["text_output"] + events[2]["text_output"]).strip()
    assert two in want
    expected = want[: want.find(two)]
    stop = {"max_tokens": 6, "stop": [two]}
    r = await client.post("/v2/models/summarizer/generate_stream", json={**body, "parameters": stop})
    streamed = [orjson.loads(line[6:]) for line in r.text.split("\n\n") if line]
    assert "".join(e["text_output"] for e in streamed) == expected and streamed[-1]["finish_reason"] == "stop"
    r = await client.post("/v2/models/summarizer/generate", json={**body, "parameters": stop})
    assert r.json()["text_output"] == expected
    # Triton's form: parameters beside text_input
    r = await client.post("/v2/models/summarizer/generate", json={"text_input": ARTICLES[0], "max_tokens": 3})
    assert r.json()["text_output"] == reference(ARTICLES[0], 3)


async def test_concurrent_generations_are_batched_and_each_gets_its_own_text(served, reference) -> None:  # noqa: ANN001
    app, client, _ = served
    scheduler = app.state.repository.get("summarizer").model.runtime.scheduler
    scheduler.batches.clear()
    jobs = [(ARTICLES[i % 3], 3 + 2 * i) for i in range(6)]
    stop_text = reference(ARTICLES[1], 6)
    stop = stop_text.split()[2] if len(stop_text.split()) > 2 else stop_text[-2:]

    async def one(text: str, n: int) -> str:
        r = await client.post(
            "/v2/models/summarizer/generate", json={"text_input": text, "parameters": {"max_tokens": n}}
        )
        assert r.status_code == 200, r.text
        return r.json()["text_output"]

    async def stopped() -> str:
        body = {"text_input": ARTICLES[1], "parameters": {"max_tokens": 20, "stop": [stop]}}
        r = await client.post("/v2/models/summarizer/generate", json=body)
        return r.json()["text_output"]

    outs = await asyncio.gather(*(one(t, n) for t, n in jobs), stopped())
    assert outs[:-1] == [reference(t, n) for t, n in jobs]
    full = reference(ARTICLES[1], 20)
    assert outs[-1] == full[: full.find(stop)]
    assert max(scheduler.batches) >= 2, scheduler.batches


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text_input": ""}, "text_input: is empty"),
        ({"text_input": "   "}, "text_input: is empty"),
        ({"text_input": 5}, "text_input: must be a string"),
        ({"parameters": {}}, "text_input: missing"),
        ({"text_input": "x", "parameters": {"max_tokens": 0}}, "parameters.max_tokens: 0 is out of range"),
        ({"text_input": "x", "parameters": {"max_tokens": 10**6}}, "parameters.max_tokens"),
        ({"text_input": "x", "parameters": {"max_tokens": "8"}}, "parameters.max_tokens: must be an integer"),
        ({"text_input": "x", "parameters": {"temperature": -1}}, "parameters.temperature"),
        ({"text_input": "x", "parameters": {"top_p": 0}}, "parameters.top_p"),
        ({"text_input": "x", "parameters": {"stop": [""]}}, "parameters.stop[0]"),
        ({"text_input": "x", "parameters": {"seed": "a"}}, "parameters.seed"),
        ({"text_input": "x", "parameters": []}, "parameters: must be an object"),
    ],
)
async def test_generate_bad_input_is_a_422_naming_the_field(served, body, field) -> None:  # noqa: ANN001
    _, client, _ = served
    for path in ("generate", "generate_stream"):
        r = await client.post(f"/v2/models/summarizer/{path}", json=body)
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]


async def test_input_over_the_context_length_is_a_422(served, reference) -> None:  # noqa: ANN001
    _, client, _ = served
    long = article_of_tokens(reference.tokenizer, 600)
    r = await client.post("/v2/models/summarizer/generate", json={"text_input": long})
    assert r.status_code == 422
    assert "text_input: 600 tokens, over the model's context length of 512" in r.json()["error"]
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["fine", long]}]}
    r = await client.post("/v2/models/summarizer/infer", json=body)
    assert r.status_code == 422 and "input 'text_input' element 1: 600 tokens" in r.json()["error"]


@pytest.mark.parametrize(
    ("data", "message"),
    [([1, 2], "is not a string for datatype BYTES"), (["ok", ""], "input 'text_input' element 1: is empty")],
)
async def test_v2_infer_bad_text_is_a_422(served, data, message) -> None:  # noqa: ANN001
    _, client, _ = served
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": data}]}
    r = await client.post("/v2/models/summarizer/infer", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"] and "text_input" in r.json()["error"]


async def test_generation_metrics(served) -> None:  # noqa: ANN001
    _, client, _ = served
    await client.post(
        "/v2/models/summarizer/generate", json={"text_input": ARTICLES[2], "parameters": {"max_tokens": 4}}
    )
    await client.post("/v2/models/summarizer/generate", json={"text_input": ""})
    text = (await client.get("/metrics")).text
    for name in (
        "mlplatform_serving_generation_time_to_first_token_seconds_count",
        "mlplatform_serving_generation_duration_seconds_count",
        "mlplatform_serving_generation_tokens_per_second_count",
        "mlplatform_serving_generation_input_tokens_sum",
        "mlplatform_serving_generation_output_tokens_sum",
        "mlplatform_serving_generation_batch_size_count",
    ):
        assert any(
            line.startswith(name + "{") and 'model="summarizer"' in line for line in text.splitlines()
        ), name
    assert 'mlplatform_serving_generation_errors_total{kind="invalid_input",model="summarizer"}' in text
    assert 'mlplatform_serving_generation_in_flight{model="summarizer"} 0.0' in text


async def test_sampling_is_repeatable_with_a_seed(served, reference) -> None:  # noqa: ANN001
    _, client, _ = served

    async def gen(**params) -> str:  # noqa: ANN003
        body = {"text_input": ARTICLES[0], "parameters": {"max_tokens": 12, **params}}
        r = await client.post("/v2/models/summarizer/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json()["text_output"]

    a, b = await asyncio.gather(gen(temperature=1.5, seed=11), gen(temperature=1.5, seed=11))
    assert a == b  # same seed, same draw, also when batched together
    others = {await gen(temperature=1.5, seed=s) for s in (12, 13, 14)}
    assert others - {a}  # other seeds draw other texts
    # top_p this small keeps only the most likely token: greedy
    assert await gen(temperature=1.5, top_p=1e-9, seed=5) == reference(ARTICLES[0], 12)


async def test_v2_infer_tokenizes_each_text_once(served, reference, monkeypatch) -> None:  # noqa: ANN001
    """Validation tokenizes the rows and hands their ids on to predict, which does not tokenize again."""
    app, client, _ = served
    rt = app.state.repository.get("summarizer").model.runtime
    calls: list[str] = []
    tokenizer = rt.tokenizer

    def counting(text: str, **kw: Any) -> Any:  # noqa: ANN401
        calls.append(text)
        return tokenizer(text, **kw)

    monkeypatch.setattr(rt, "tokenizer", counting)
    for texts in (ARTICLES[:2], [ARTICLES[0]] * 2):  # the second: rows of equal token counts
        calls.clear()
        body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": texts}]}
        r = await client.post("/v2/models/summarizer/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [reference(a, 32) for a in texts]
        assert calls == texts


async def test_request_keys_are_computed_at_load_not_per_request(served, monkeypatch) -> None:  # noqa: ANN001
    """The inputs that make a request entity-keyed (for a model without a feature service: the feature
    contract's keys, whose first look-up imports the contract and pandas) are the loaded version's."""
    from mlplatform.features import enrich

    app, client, _ = served
    model = app.state.repository.get("summarizer").model
    assert model.feature_service is None
    assert model.request_keys == enrich.request_keys(None, ())
    looked_up: list[int] = []
    monkeypatch.setattr(enrich, "contract_entity_keys", lambda: looked_up.append(1) or {})
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ARTICLES[:1]}]}
    for _ in range(2):
        assert (await client.post("/v2/models/summarizer/infer", json=body)).status_code == 200
    keyed = {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [1]}]}
    r = await client.post("/v2/models/summarizer/infer", json=keyed)
    assert r.status_code == 422 and "user_id" in r.json()["error"], r.text
    assert looked_up == []


async def test_a_hot_swap_loses_no_generation(served, reference) -> None:  # noqa: ANN001
    """A forced reload swaps the summarizer's handle while generations run: those already submitted
    finish on the old version with their full text (its scheduler drains before it exits), and one
    validated before the swap but submitted after it is generated by the version now served."""
    from mlplatform.serving.text.routes import Generation

    app, client, _ = served
    repo = app.state.repository
    old = repo.get("summarizer")
    scheduler = old.model.runtime.scheduler
    body = {"text_input": ARTICLES[1], "parameters": {"max_tokens": 160}}
    want = reference(ARTICLES[1], 160)
    late = Generation(app.state.dataplane, "summarizer", None, orjson.dumps(body))  # bound to the old handle
    running = [
        asyncio.create_task(client.post("/v2/models/summarizer/generate", json=body)) for _ in range(3)
    ]
    await wait_until(lambda: scheduler._in_flight >= 3, 60)
    # two more queue behind the running batch: the swap must not fail them either
    running += [
        asyncio.create_task(client.post("/v2/models/summarizer/generate", json=body)) for _ in range(2)
    ]
    await wait_until(lambda: scheduler._in_flight >= 5, 60)
    assert scheduler._pending, "the two were generated before the swap; nothing was queued"
    assert await repo.reload("summarizer", force=True)
    assert repo.get("summarizer") is not old and scheduler._closed
    for r in await asyncio.gather(*running):
        assert r.status_code == 200, r.text
        assert r.json()["text_output"] == want
    assert "".join([c async for c in late.chunks()]) == want
    assert late.handle is repo.get("summarizer")  # re-bound to the new handle
