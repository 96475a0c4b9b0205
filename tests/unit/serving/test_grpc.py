"""V2 over gRPC: the real grpc.aio server the serving lifespan starts, driven by the generated grpcio
stubs in-process and by the real clients (tritonclient.grpc, kserve's InferenceGRPCClient) from
``.venv-clients`` (tests/clients). Answers are compared with the model's own predictions (the sklearn
model loaded from the registry); errors are gRPC statuses carrying the REST error's message."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mlplatform.core.auth import hash_key
from mlplatform.core.registry import TAG_FEATURE_SERVICE, mlflow_client
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from mlplatform.serving.grpc_server import INTERNAL_MESSAGE, grpc_status
from mlplatform.v2.grpc_codec import encode_raw
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2_grpc as pb2_grpc
from tests.clients.harness import arun_clients, infer_call
from tests.helpers import in_process, v2_body, wait_until
from tests.procs import free_port
from tests.unit.serving.registry_models import FEATURES, FOREST, HGB, TYPES
from tests.unit.serving.support import (
    ListSink,
    RunningApp,
    decode_outputs,
    make_settings,
    raw_matrix_request,
    typed_request,
    want_proba,
)

SERVICE = "model-serving"
INFER_ROUTE = "/inference.GRPCInferenceService/ModelInfer"
KEYS = f"{hash_key('infer-key')}:infer,{hash_key('other')}:explain"


@pytest.fixture(scope="module")
async def served(serving_registry, tmp_path_factory):
    """FOREST and HGB with gRPC on a free port, API keys on, a payload sink and an in-memory tracer."""

    sink = ListSink()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(
        serving_registry,
        tmp_path_factory.mktemp("grpc"),
        models=f"{FOREST},{HGB}",
        grpc_port=free_port(),
        host="127.0.0.1",
        auth_enabled=True,
    )
    app = create_app(
        settings,
        secrets=EnvSecretsBackend({"MLPLATFORM_API_KEYS": KEYS}),
        payload_sink=sink,
        tracer_provider=provider,
    )
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(in_process(app, "http://t"))
        running = RunningApp(app, client)
        await wait_until(running.repository.ready)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}")
        await stack.enter_async_context(channel)
        running.stub = pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[attr-defined]
        running.url = f"127.0.0.1:{app.state.grpc_port}"  # type: ignore[attr-defined]
        running.sink = sink  # type: ignore[attr-defined]
        running.spans = exporter  # type: ignore[attr-defined]
        yield running


AUTH = (("x-api-key", "infer-key"),)


async def test_typed_and_raw_inputs_answer_the_models_own_predictions(served, serving_registry):
    df = serving_registry.frame.iloc[200:232].reset_index(drop=True)
    for name in (FOREST, HGB):  # ONNX Runtime and the native fallback
        want = want_proba(serving_registry, name, df)
        for req in (typed_request(df, name), raw_matrix_request(df, name)):
            resp = await served.stub.ModelInfer(req, metadata=AUTH)
            assert (resp.model_name, resp.model_version, resp.id) == (name, "1", req.id)
            assert resp.parameters["prediction_id"].string_param
            outs = decode_outputs(resp)
            assert [o.datatype for o in resp.outputs] == ["FP64", "INT64"]
            assert outs["probability"].shape == (32,)
            np.testing.assert_allclose(outs["probability"], want, atol=1e-4)
            np.testing.assert_array_equal(outs["label"], (outs["probability"] >= 0.5).astype(int))
    # requested outputs are honoured, in the requested order
    req = raw_matrix_request(df.iloc[:2])
    req.outputs.add(name="label")
    resp = await served.stub.ModelInfer(req, metadata=AUTH)
    assert [o.name for o in resp.outputs] == ["label"] and len(resp.raw_output_contents) == 1


async def test_health_and_metadata_rpcs(served):
    stub = served.stub
    assert (await stub.ServerLive(pb2.ServerLiveRequest())).live is True
    assert (await stub.ServerReady(pb2.ServerReadyRequest())).ready is True
    meta = await stub.ServerMetadata(pb2.ServerMetadataRequest())
    assert meta.name == "mlplatform-model-serving" and meta.version
    assert (await stub.ModelReady(pb2.ModelReadyRequest(name=FOREST))).ready is True
    assert (await stub.ModelReady(pb2.ModelReadyRequest(name=FOREST, version="7"))).ready is False
    m = await stub.ModelMetadata(pb2.ModelMetadataRequest(name=FOREST), metadata=AUTH)
    assert m.name == FOREST and list(m.versions) == ["1"] and m.platform == "sklearn"
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [(f, TYPES[f], [-1]) for f in FEATURES]
    assert {t.name for t in m.outputs} == {"probability", "label"}
    assert m.properties["runtime"] == "onnxruntime"
    served.app.draining = True  # SIGTERM's shutdown delay: not ready, still serving
    try:
        assert (await stub.ServerReady(pb2.ServerReadyRequest())).ready is False
    finally:
        served.app.draining = False


async def _status(call) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


async def test_client_mistakes_are_statuses_naming_the_problem(served, serving_registry):
    stub = served.stub
    df = serving_registry.frame.iloc[:2]
    missing = typed_request(df)
    del missing.inputs[-1]
    cases = []
    cases.append((missing, grpc.StatusCode.INVALID_ARGUMENT, "input 'is_foreign': missing"))
    short = raw_matrix_request(df)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-8]
    cases.append((short, grpc.StatusCode.INVALID_ARGUMENT, "raw contents have 72 bytes"))
    wrong_field = typed_request(df)
    wrong_field.inputs[0].contents.ClearField("fp64_contents")
    wrong_field.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    cases.append((wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "goes in contents.fp64_contents"))
    nan = typed_request(df)
    nan.inputs[0].contents.fp64_contents[0] = float("nan")
    cases.append((nan, grpc.StatusCode.INVALID_ARGUMENT, "amount"))
    bad_type = raw_matrix_request(df)
    bad_type.inputs[0].datatype = "FP128"
    cases.append((bad_type, grpc.StatusCode.INVALID_ARGUMENT, "datatype 'FP128' is not one of"))
    unknown = raw_matrix_request(df, model="nope")
    cases.append((unknown, grpc.StatusCode.NOT_FOUND, "model 'nope'"))
    old = raw_matrix_request(df)
    old.model_version = "9"
    cases.append((old, grpc.StatusCode.NOT_FOUND, "version 9 is not loaded"))
    bad_output = raw_matrix_request(df)
    bad_output.outputs.add(name="logits")
    cases.append((bad_output, grpc.StatusCode.INVALID_ARGUMENT, "outputs: 'logits'"))
    mixed = raw_matrix_request(df)
    mixed.inputs.add(name="extra", datatype="FP64", shape=[2])
    cases.append((mixed, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents: has 1 entries for 2 inputs"))
    for req, code, fragment in cases:
        got_code, details = await _status(served.stub.ModelInfer(req, metadata=AUTH))
        assert got_code == code and fragment in details, (got_code, details)
    code, details = await _status(stub.ModelReady(pb2.ModelReadyRequest(name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    # the same body limit as REST, enforced by gRPC itself
    limit = served.app.state.ctx.settings.max_body_bytes
    huge = pb2.ModelInferRequest(model_name=FOREST)
    huge.inputs.add(name="input-0", datatype="FP64", shape=[limit // 40 + 1, 5])
    huge.raw_input_contents.append(b"\0" * ((limit // 40 + 1) * 40))
    code, _ = await _status(stub.ModelInfer(huge, metadata=AUTH))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_api_keys_from_metadata(served, serving_registry):
    req = raw_matrix_request(serving_registry.frame.iloc[:1])
    stub = served.stub
    code, details = await _status(stub.ModelInfer(req))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "missing API key" in details
    code, details = await _status(stub.ModelInfer(req, metadata=(("x-api-key", "wrong"),)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in details
    code, details = await _status(stub.ModelInfer(req, metadata=(("x-api-key", "other"),)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'infer' scope" in details
    code, _ = await _status(stub.ModelMetadata(pb2.ModelMetadataRequest(name=FOREST)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    ok = await stub.ModelInfer(req, metadata=(("authorization", "Bearer infer-key"),))
    assert ok.model_name == FOREST


def _sample(app, name: str, **labels: str) -> float:  # noqa: ANN001
    if name.startswith("mlplatform_http_"):
        labels = {"service": SERVICE, **labels}
    return app.state.ctx.registry.get_sample_value(name, labels) or 0.0


async def test_metrics_payloads_request_id_and_trace(served, serving_registry):
    app = served.app
    df = serving_registry.frame.iloc[300:303]
    ok_before = _sample(app, "mlplatform_http_requests_total", route=INFER_ROUTE, method="POST", code="200")
    bad_before = _sample(app, "mlplatform_http_requests_total", route=INFER_ROUTE, method="POST", code="422")
    served_before = _sample(
        app, "mlplatform_serving_requests_total", model=FOREST, version="1", outcome="success"
    )
    records_before = len(served.sink.records)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (
        *AUTH,
        ("x-request-id", "rid-grpc-1"),
        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
    )
    call = served.stub.ModelInfer(typed_request(df), metadata=metadata)
    resp = await call
    trailing = dict(await call.trailing_metadata())
    assert trailing["x-request-id"] == "rid-grpc-1"
    bad = typed_request(df)
    del bad.inputs[0]
    await _status(served.stub.ModelInfer(bad, metadata=AUTH))
    assert _sample(app, "mlplatform_http_requests_total", route=INFER_ROUTE, method="POST", code="200") == (
        ok_before + 1
    )
    assert _sample(app, "mlplatform_http_requests_total", route=INFER_ROUTE, method="POST", code="422") == (
        bad_before + 1
    )
    assert _sample(app, "mlplatform_http_requests_in_flight") == 0
    assert _sample(
        app, "mlplatform_serving_requests_total", model=FOREST, version="1", outcome="success"
    ) == (served_before + 1)
    new = served.sink.records[records_before:]
    assert len(new) == 3 and {r.prediction_id for r in new} == {resp.parameters["prediction_id"].string_param}
    assert [r.inputs["amount"] for r in new] == pytest.approx(df["amount"].tolist())
    assert all(r.trace_id == trace_id for r in new)
    spans = [s for s in served.spans.get_finished_spans() if s.name == f"POST {INFER_ROUTE}"]
    mine = [s for s in spans if format(s.context.trace_id, "032x") == trace_id]
    assert len(mine) == 1 and mine[0].kind == SpanKind.SERVER
    assert mine[0].attributes["http.response.status_code"] == 200


def test_status_mapping_and_output_encoding():
    assert grpc_status(422) == grpc_status(400) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_status(413) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_status(500) == grpc_status(418) == grpc.StatusCode.INTERNAL
    assert "see the server log" in INTERNAL_MESSAGE
    assert encode_raw(np.array(["ab", "é"], dtype=object), "BYTES") == b"\2\0\0\0ab\2\0\0\0\xc3\xa9"
    assert encode_raw(np.array([True, False]), "BOOL") == b"\1\0"


# --- the real clients (tests/clients, .venv-clients) ---------------------------------------------


def _client_inputs(df, binary: bool = True) -> list[dict]:  # noqa: ANN001
    return v2_body(df, TYPES, tensor={"binary": binary})["inputs"]


@pytest.mark.parametrize("client", ["triton-grpc", "kserve-grpc"])
async def test_real_clients_over_grpc(served, serving_registry, client):
    df = serving_registry.frame.iloc[400:425].reset_index(drop=True)
    want = want_proba(serving_registry, FOREST, df)
    matrix = df[FEATURES].astype(float).to_numpy()
    calls = [
        {"op": "server_live"},
        {"op": "server_ready"},
        {"op": "model_ready", "model": FOREST},
        infer_call(FOREST, _client_inputs(df), request_id="client-1"),
        infer_call(
            FOREST,
            [{"name": "input-0", "shape": [25, 5], "datatype": "FP64", "data": matrix.reshape(-1).tolist()}],
            outputs=[{"name": "probability"}],
            version="1",
        ),
        infer_call(FOREST, _client_inputs(df)[:-1]),  # an input missing
        infer_call("nope", _client_inputs(df)),
    ]
    if client == "triton-grpc":
        calls.append({"op": "model_metadata", "model": FOREST})
    results = await arun_clients(client, served.url, calls, headers={"x-api-key": "infer-key"})
    live, ready, model_ready, typed, matrix_res, missing, unknown, *meta = results
    assert live == ready == model_ready == {"ok": True, "result": True}
    for res in (typed, matrix_res):
        assert res["ok"], res
        outs = {o["name"]: o for o in res["result"]["outputs"]}
        assert res["result"]["model_name"] == FOREST and res["result"]["model_version"] == "1"
        np.testing.assert_allclose(outs["probability"]["data"], want, atol=1e-4)
        assert outs["probability"]["datatype"] == "FP64" and outs["probability"]["shape"] == [25]
    assert typed["result"]["id"] == "client-1"
    assert [o["name"] for o in matrix_res["result"]["outputs"]] == ["probability"]
    assert missing["ok"] is False and missing["error"]["status"] == "INVALID_ARGUMENT"
    assert "input 'is_foreign': missing" in missing["error"]["message"]
    assert unknown["ok"] is False and unknown["error"]["status"] == "NOT_FOUND"
    assert "model 'nope'" in unknown["error"]["message"]
    if meta:
        doc = meta[0]["result"]
        assert doc["name"] == FOREST and [i["name"] for i in doc["inputs"]] == FEATURES
    no_key = await arun_clients(client, served.url, [infer_call(FOREST, _client_inputs(df))])
    assert no_key[0]["ok"] is False and no_key[0]["error"]["status"] == "UNAUTHENTICATED"


async def test_grpc_port_zero_turns_it_off(serving_registry, tmp_path):
    settings = make_settings(serving_registry, tmp_path, models=FOREST, grpc_port=0)
    app = create_app(settings, secrets=EnvSecretsBackend({}))
    async with app.router.lifespan_context(app):
        assert app.state.grpc_port is None


class HeldFeatures:
    """A feature client (serving's FeatureStoreClient interface) that holds each lookup until released:
    a gRPC call in flight for as long as the test wants."""

    def __init__(self, frame) -> None:  # noqa: ANN001
        self.frame = frame
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get_online_features(self, service: str, rows: list[dict]) -> list[dict]:
        self.entered.set()
        await self.release.wait()
        cols = [c for c in FEATURES if c != "amount"]
        return [{c: self.frame[c].iloc[i].item() for c in cols} for i in range(len(rows))]

    async def aclose(self) -> None:
        pass


async def test_shutdown_drains_in_flight_calls_and_refuses_new_ones(serving_registry, tmp_path):
    mlflow_client(serving_registry.uri).set_model_version_tag(
        FOREST, "1", TAG_FEATURE_SERVICE, "fraud_detection_v1"
    )
    df = serving_registry.frame.iloc[500:502].reset_index(drop=True)
    features = HeldFeatures(df)
    settings = make_settings(
        serving_registry,
        tmp_path,
        models=FOREST,
        grpc_port=free_port(),
        host="127.0.0.1",
        grpc_shutdown_grace_s=5,
        feature_store_timeout_s=5.0,  # the held lookup must outlast the polling below (the data plane's deadline)
    )
    app = create_app(settings, secrets=EnvSecretsBackend({}), feature_client=features)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    target = f"127.0.0.1:{app.state.grpc_port}"
    stopping = None
    try:
        await wait_until(app.state.repository.ready)
        req = pb2.ModelInferRequest(model_name=FOREST, id="in-flight")
        req.inputs.add(name="user_id", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, 2])
        req.inputs.add(name="merchant_id", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
            [b"m-1", b"m-2"]
        )
        req.inputs.add(name="amount", datatype="FP64", shape=[2]).contents.fp64_contents.extend(
            df["amount"].tolist()
        )
        async with grpc.aio.insecure_channel(target) as channel:
            in_flight = asyncio.ensure_future(pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req))
            await asyncio.wait_for(features.entered.wait(), 30)
            stopping = asyncio.ensure_future(lifespan.__aexit__(None, None, None))
            # new calls are refused once the server stops (polled, each on a new connection)
            end = asyncio.get_running_loop().time() + 10
            while True:
                async with grpc.aio.insecure_channel(target) as fresh:
                    try:
                        await pb2_grpc.GRPCInferenceServiceStub(fresh).ServerLive(
                            pb2.ServerLiveRequest(), timeout=1
                        )
                    except grpc.aio.AioRpcError as exc:
                        # refused: no listener (UNAVAILABLE), no answer in time, or a call the stopping
                        # server cancelled as it arrived (seen once in a full run under load)
                        assert exc.code() in (
                            grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.CANCELLED,
                        )
                        break
                assert asyncio.get_running_loop().time() < end, "still accepting calls while stopping"
                await asyncio.sleep(0.05)
            assert not in_flight.done()
            features.release.set()
            resp = await asyncio.wait_for(in_flight, 10)
        assert resp.id == "in-flight" and resp.model_name == FOREST
        full = df[FEATURES]
        np.testing.assert_allclose(
            decode_outputs(resp)["probability"], want_proba(serving_registry, FOREST, full), atol=1e-4
        )
        await asyncio.wait_for(stopping, 10)
    finally:
        features.release.set()
        if stopping is None:
            await lifespan.__aexit__(None, None, None)
