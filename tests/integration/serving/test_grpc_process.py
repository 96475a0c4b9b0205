"""V2 over gRPC in the real `mlplatform serve model-serving` process (uvloop, the CLI's draining server):
tritonclient.grpc from .venv-clients gets the model's own predictions, and SIGTERM keeps gRPC serving
through the shutdown delay with ServerReady false, then the process exits cleanly."""

from __future__ import annotations

import signal
import time

import grpc
import numpy as np
import pytest

from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2_grpc as pb2_grpc
from tests.clients.harness import infer_call, run_clients
from tests.helpers import v2_body
from tests.procs import free_port, start_service
from tests.unit.serving.registry_models import FOREST, TYPES, shared_registry
from tests.unit.serving.support import decode_outputs, process_env, raw_matrix_request, want_proba

pytestmark = pytest.mark.integration
KEY = "grpc-process-key"


def test_grpc_in_the_real_process_and_through_sigterm(tmp_path_factory):
    reg = shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")
    data_dir = tmp_path_factory.mktemp("grpc-proc")
    grpc_port = free_port()
    env = process_env(
        reg,
        data_dir,
        FOREST,
        KEY,
        SERVING_HOST="127.0.0.1",
        SERVING_GRPC_PORT=str(grpc_port),
        SERVING_SHUTDOWN_DELAY_S="3",
        SERVING_RUNTIME="native",  # start-up without the ONNX conversion (not under test here)
    )
    svc = start_service("model-serving", env, data_dir / "logs", ready_timeout=180)
    target = f"127.0.0.1:{grpc_port}"
    try:
        df = reg.frame.iloc[600:610].reset_index(drop=True)
        inputs = v2_body(df, TYPES, tensor={"binary": True})["inputs"]
        ready, res = run_clients(
            "triton-grpc",
            target,
            [{"op": "server_ready"}, infer_call(FOREST, inputs)],
            headers={"x-api-key": KEY},
        )
        assert ready == {"ok": True, "result": True}
        assert res["ok"], res
        proba = next(o for o in res["result"]["outputs"] if o["name"] == "probability")["data"]
        np.testing.assert_allclose(proba, want_proba(reg, FOREST, df), atol=1e-4)

        with grpc.insecure_channel(target) as channel:
            stub = pb2_grpc.GRPCInferenceServiceStub(channel)
            svc.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + 3
            while stub.ServerReady(pb2.ServerReadyRequest(), timeout=2).ready:
                assert time.monotonic() < end, "gRPC ServerReady still true after SIGTERM"
                time.sleep(0.05)
            # still serving inference during the shutdown delay
            resp = stub.ModelInfer(
                raw_matrix_request(df.iloc[:2]), metadata=(("x-api-key", KEY),), timeout=10
            )
            assert decode_outputs(resp)["probability"].shape == (2,)
        # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too
        assert svc.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Traceback" not in svc.logs()
    finally:
        svc.stop()
