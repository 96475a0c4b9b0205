"""The real ``mlplatform serve model-serving`` process serving the summarizer: server-sent events arrive
one by one over a real socket, and a client that disconnects mid-stream frees its slot in the batch
while the request batched beside it finishes with its own text."""

from __future__ import annotations

import json
import threading

import httpx
import orjson
import pytest

from tests.helpers import wait_until_sync
from tests.procs import start_service

pytestmark = pytest.mark.integration

ARTICLE = "Lisbon , Monday . Acme said on Monday that it will open 12 stores in Lisbon ."
OTHER = "Quito , Tuesday . Wonka said on Tuesday that it will plant 30 trees in Quito ."


@pytest.fixture(scope="module")
def server(text_registry, tmp_path_factory):  # noqa: ANN001, ANN201
    data_dir = tmp_path_factory.mktemp("text-proc")
    env = {
        "MLFLOW_TRACKING_URI": text_registry.tracking_uri,
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "SERVING_MODELS": "summarizer",
        "SERVING_AUTH_ENABLED": "false",
        "SERVING_POLL_INTERVAL_S": "0",
        "SERVING_LOG_LEVEL": "INFO",
        "SERVING_TEXT_BATCH_WAIT_MS": "500",
        "HF_HUB_OFFLINE": "1",
        # loaded in the process (no prepare child: test_text_serving covers that path; ~13 s less here)
        "SERVING_RUNTIME": "native",
    }
    svc = start_service("model-serving", env, data_dir / "logs", ready_timeout=180)
    yield svc
    svc.stop()


def metric(url: str, line_start: str, *contains: str) -> float | None:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(line_start) and all(c in line for c in contains):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_generate_stream_sends_events_as_tokens_come(server) -> None:  # noqa: ANN001
    url = server.url
    whole = httpx.post(
        f"{url}/v2/models/summarizer/generate",
        json={"text_input": ARTICLE, "parameters": {"max_tokens": 8}},
        timeout=60,
    )
    assert whole.status_code == 200, whole.text
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    events = []
    with httpx.stream(
        "POST",
        f"{url}/v2/models/summarizer/generate_stream",
        json={"text_input": ARTICLE, "parameters": {"max_tokens": 8}},
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        timeout=60,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    assert len(events) >= 3
    assert "".join(e["text_output"] for e in events) == whole.json()["text_output"]
    # the access line of the stream carries the caller's trace id
    wait_until_sync(lambda: trace in server.logs(), 10, "access log line with the trace id")
    line = next(json.loads(x) for x in server.logs().splitlines() if trace in x and x.startswith("{"))
    assert "generate_stream" in json.dumps(line)
    # bad input over the wire: a 422 naming the field, no event stream
    r = httpx.post(
        f"{url}/v2/models/summarizer/generate_stream",
        json={"text_input": ARTICLE, "parameters": {"max_tokens": 0}},
        timeout=60,
    )
    assert r.status_code == 422 and "parameters.max_tokens" in r.json()["error"]


def test_client_disconnect_frees_its_slot_and_the_batch_goes_on(server) -> None:  # noqa: ANN001
    url = server.url
    dropped = 'mlplatform_serving_generation_errors_total{kind="client_disconnected",model="summarizer"}'
    before = metric(url, dropped) or 0.0
    solo = httpx.post(
        f"{url}/v2/models/summarizer/generate",
        json={"text_input": OTHER, "parameters": {"max_tokens": 40}},
        timeout=60,
    ).json()["text_output"]
    batches = "mlplatform_serving_generation_batch_size"
    batches_before = (metric(url, batches + "_count"), metric(url, batches + "_bucket", 'le="1.0"'))
    got: dict[str, str] = {}

    def neighbour() -> None:
        r = httpx.post(
            f"{url}/v2/models/summarizer/generate",
            json={"text_input": OTHER, "parameters": {"max_tokens": 40}},
            timeout=120,
        )
        got["text"] = r.json()["text_output"]

    t = threading.Thread(target=neighbour)
    t.start()
    # the long stream: 500 tokens; read two events, then go away
    with httpx.Client(timeout=120) as client:
        with client.stream(
            "POST",
            f"{url}/v2/models/summarizer/generate_stream",
            json={"text_input": ARTICLE, "parameters": {"max_tokens": 500}},
        ) as r:
            n = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    n += 1
                    if n == 2:
                        break
    t.join(120)
    assert got["text"] == solo  # the neighbour's text is its own, whatever happened beside it
    # the scheduler saw the cancellation before the 500 tokens were written (a normal end is not counted)
    wait_until_sync(lambda: (metric(url, dropped) or 0.0) == before + 1, 60, "the dropped stream")
    wait_until_sync(
        lambda: metric(url, 'mlplatform_serving_generation_in_flight{model="summarizer"}') == 0.0,
        30,
        "in-flight 0",
    )
    # the two were one batch of two (500 ms gathering window): one more batch, none of size 1
    assert metric(url, batches + "_count") == batches_before[0] + 1
    assert metric(url, batches + "_bucket", 'le="1.0"') == batches_before[1]
