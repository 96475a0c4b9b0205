"""A text model through the real drift app: serving's payload batches in, a window out, text gauges.

The summarizer's reference (``text_input`` docstrings, ``text_output`` their first sentence: real text)
is registered in the test MLflow registry the way training logs it. Payload batches are written by
serving's own encoder (``PayloadBatch.encode``): ``text_input`` among the inputs, ``text_output`` among
the outputs. Runs on SQLite and on PostgreSQL; strings of any length and any Unicode (a 1 MiB text,
NUL, emoji, CJK, newlines) come back from the store unchanged.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlplatform.core.payloads import PayloadBatch, encode_batches
from tests.unit.drift.text_corpora import docstrings, licenses, sample
from tests.unit.drift.tiny_registry import TinyRegistry, drift_settings, register, running_app

MODEL = "summarizer-drift-test"
WINDOW = 150


def _summary(text: str) -> str:
    """The first sentence: what a summarizer's output looks like, from the same real text."""
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


@pytest.fixture(scope="module")
def summarizer(
    tiny_registry: TinyRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, pd.DataFrame]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tiny_registry.uri, registry_uri=tiny_registry.uri)
    exp = client.get_experiment_by_name("drift-tests")
    docs = sample(docstrings(), 400, seed=20)
    reference = pd.DataFrame({"text_input": docs, "text_output": [_summary(d) for d in docs]})
    version = register(client, exp.experiment_id, MODEL, reference, tmp_path_factory.mktemp("summarizer"))
    return version, reference


def _batch(i: int, version: str, texts: list[str]) -> PayloadBatch:
    return PayloadBatch(
        request_id=f"req-{i}",
        prediction_id=f"pred-{i}",
        model=MODEL,
        version=version,
        timestamp=1_700_000_000.0 + i,
        names=["text_input"],
        columns={"text_input": np.array(texts, dtype=object)},
        outputs={"text_output": np.array([_summary(t) for t in texts], dtype=object)},
        n_rows=len(texts),
    )


def _gauges(exposition: str, name: str) -> dict[tuple[str, ...], float]:
    for family in text_string_to_metric_families(exposition):
        if family.name == name:
            return {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return {}


@pytest.mark.usefixtures("drift_backend")
async def test_text_payloads_are_windowed_and_exported(summarizer, tiny_registry, tmp_path) -> None:  # noqa: ANN001
    version, reference = summarizer
    odd = [
        "x" * (1 << 20),  # 1 MiB of text in one row
        "NUL \x00 inside, emoji \U0001f600, CJK \u6587\u672c, quotes \u201cso\u201d,\nnew\tlines\r\n",
    ]
    texts = odd + sample(licenses(), WINDOW - len(odd), seed=21)
    settings = drift_settings(tiny_registry, tmp_path, window_size=WINDOW)
    async with running_app(settings) as (client, app):
        first = [_batch(0, version, odd)]  # the big row alone: a request body stays under the 4 MiB limit
        rest = [_batch(1 + i, version, texts[len(odd) + i * 37 : len(odd) + (i + 1) * 37]) for i in range(4)]
        closed = 0
        for batches in (first, rest):
            r = await client.post(
                "/v1/records", content=encode_batches(batches), headers={"content-type": "application/json"}
            )
            assert r.status_code == 200, r.text[:500]
            closed += r.json()["windows_closed"]
        assert closed == 1

        window = (await client.get(f"/v1/models/{MODEL}/drift")).json()["window"]
        assert window["n_records"] == WINDOW
        for column in ("text_input", "text_output"):
            col = window["features"][column]
            assert col["column_type"] == "text" and col["method"] == "perc_text_content_drift", column
            assert col["drifted"] and col["statistic"] > col["cutoff"], column
        assert window["dataset_drift"]

        # every string came back from the store exactly as sent
        store = app.state.dataplane.store
        stored = store.window_records(window["id"])
        assert [r.inputs["text_input"] for r in stored] == texts
        assert [r.inputs["text_output"] for r in stored] == [_summary(t) for t in texts]

        metrics = (await client.get("/metrics")).text
        descriptors = _gauges(metrics, "mlplatform_drift_text_descriptor")
        key = lambda feature, descriptor, window: tuple(  # noqa: E731
            sorted(
                {
                    "model": MODEL,
                    "version": version,
                    "feature": feature,
                    "descriptor": descriptor,
                    "window": window,
                }.items()
            )
        )
        assert descriptors[key("text_input", "length", "current")] == pytest.approx(
            np.mean([len(t) for t in texts])
        )
        assert descriptors[key("text_input", "length", "reference")] == pytest.approx(
            reference["text_input"].str.len().mean()
        )
        non_letters = [sum(not c.isalpha() and c != " " for c in t) / len(t) for t in texts]
        assert descriptors[key("text_input", "non_letter_share", "current")] == pytest.approx(
            np.mean(non_letters)
        )
        oov_cur = descriptors[key("text_output", "oov_share", "current")]
        assert oov_cur > descriptors[key("text_output", "oov_share", "reference")]
        assert len(descriptors) == 2 * 3 * 2  # two columns, three descriptors, two windows
        scores = _gauges(metrics, "mlplatform_drift_feature_score")
        score_key = tuple(
            sorted(
                {
                    "model": MODEL,
                    "version": version,
                    "feature": "text_input",
                    "method": "perc_text_content_drift",
                }.items()
            )
        )
        assert scores[score_key] == pytest.approx(window["features"]["text_input"]["statistic"])
        assert orjson.loads(orjson.dumps(window))  # the window document is plain JSON


async def test_payload_logger_keeps_text_batches_under_the_body_limit(
    summarizer, tiny_registry, tmp_path
) -> None:  # noqa: ANN001
    """1000 rows per POST is 6 MiB of text here, over drift detection's 4 MiB body limit (a 413 drops
    them for good): the logger splits by bytes and every row arrives. Real drift app, real uvicorn."""
    import threading

    import httpx
    import uvicorn
    from prometheus_client import CollectorRegistry

    from mlplatform.drift.app import create_app
    from mlplatform.drift.payload_logger import PayloadLogger
    from tests.helpers import wait_until
    from tests.procs import free_port

    version, _ = summarizer
    settings = drift_settings(tiny_registry, tmp_path / "drift", window_size=10_000)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    docs = sample(licenses(), 60, seed=22)
    rows = [(d * (100_000 // len(d) + 1))[:100_000] for d in docs]  # 60 rows of 100 kB real text

    async def ship(max_body_bytes: int, offset: int) -> CollectorRegistry:
        registry = CollectorRegistry()
        logger = PayloadLogger(
            base,
            batch_size=1000,
            sample_rate=1.0,
            spool_dir=tmp_path / f"spool-{offset}",
            spool_max_bytes=100_000_000,
            flush_interval_s=0.05,
            registry=registry,
            timeout_s=30.0,
            max_body_bytes=max_body_bytes,
        )
        await logger.start()
        for i, text in enumerate(rows):
            logger.submit(_batch(offset + i, version, [text]))
        await logger.stop()
        return registry

    try:
        await wait_until(lambda: server.started, 30.0, "the drift app to start")
        split = await ship(3 * 1024 * 1024, 0)
        assert split.get_sample_value("mlplatform_payload_records_sent_total") == len(rows)
        async with httpx.AsyncClient(base_url=base) as client:
            status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
            assert status["open_records"] == {version: len(rows)}
            # the same rows in one body: refused for good (the failure the split avoids)
            whole = await ship(10 * 1024 * 1024, 1000)
            assert whole.get_sample_value(
                "mlplatform_payload_records_dropped_total", {"reason": "rejected"}
            ) == len(rows)
            status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
            assert status["open_records"] == {version: len(rows)}
    finally:
        server.should_exit = True
        thread.join(10)
