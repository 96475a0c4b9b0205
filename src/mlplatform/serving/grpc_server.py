"""Open Inference Protocol (V2) over gRPC: ``inference.GRPCInferenceService`` on the serving data plane.

gRPC only: every RPC is handed to the same :class:`~mlplatform.serving.dataplane.ServingDataPlane` as REST
(``ModelInfer`` through :meth:`~mlplatform.serving.dataplane.ServingDataPlane.infer_parsed`: the same
validation, batching, serving metrics and payload logging), and the metered RPCs (``ModelReady``,
``ModelMetadata``, ``ModelInfer``) through the app's :class:`~mlplatform.core.pipeline.RequestPipeline`:
request id (metadata ``x-request-id`` or a new one, answered in the trailing metadata), the in-flight
gauge the HPA scales on, trace context (metadata ``traceparent``/``tracestate``) and server span, request
metrics and access log. A gRPC call is an HTTP/2 ``POST`` to ``/inference.GRPCInferenceService/<Method>``,
so that is the method and route template it is recorded under, with the HTTP status REST would have
answered (200, 4xx, 5xx; 499 for a call the client cancelled): dashboards and the 5xx alerts count both.
``ServerLive``, ``ServerReady`` and ``ServerMetadata`` are unmetered, like REST's health and ``/v2``.

API keys come from metadata, as REST's headers: ``x-api-key: <key>`` or ``authorization: Bearer <key>``
(``ModelInfer`` and ``ModelMetadata`` need the ``infer`` scope, as their REST routes). Errors are a gRPC
status with the REST error's message: 400/422 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403
PERMISSION_DENIED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED;
anything else INTERNAL with a generic message (the exception is logged, never sent).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mlplatform.core.auth import ApiKeyAuth
from mlplatform.core.errors import PlatformError
from mlplatform.core.pipeline import RequestPipeline
from mlplatform.serving.dataplane import InferResult, ServingDataPlane, output_datatype
from mlplatform.v2.grpc_codec import encode_raw, parse_model_infer_request
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2_grpc as pb2_grpc

log = logging.getLogger("mlplatform.serving.grpc")

SERVICE = "inference.GRPCInferenceService"
#: the request pipeline's method for gRPC calls (a gRPC call is an HTTP/2 POST to /<service>/<method>)
METHOD = "POST"

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
INTERNAL_MESSAGE = "internal error while serving the request; see the server log for its request id"


def grpc_status(http_status: int) -> grpc.StatusCode:
    """The gRPC status code for an error's HTTP status (INTERNAL for any other)."""
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def _metadata(context: grpc.aio.ServicerContext) -> dict[bytes, bytes]:
    """The call's metadata as the pipeline's raw headers (lower-case keys; binary ``-bin`` values kept)."""
    out: dict[bytes, bytes] = {}
    for key, value in context.invocation_metadata() or ():
        out[key.lower().encode("latin-1")] = value if isinstance(value, bytes) else value.encode("latin-1")
    return out


def infer_response(result: InferResult) -> pb2.ModelInferResponse:
    """An answered request as a ``ModelInferResponse``: outputs in ``raw_output_contents``, the
    prediction id in ``parameters`` (as REST's ``parameters.prediction_id``)."""
    resp = pb2.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id
    )
    resp.parameters["prediction_id"].string_param = result.prediction_id
    for name, arr in result.outputs:
        dt = output_datatype(arr)
        resp.outputs.add(name=name, datatype=dt, shape=list(arr.shape))
        resp.raw_output_contents.append(encode_raw(arr, dt))
    return resp


class InferenceServicer(pb2_grpc.GRPCInferenceServiceServicer):
    """The six RPCs of ``inference.GRPCInferenceService`` over one data plane."""

    def __init__(
        self,
        plane: ServingDataPlane,
        pipeline: RequestPipeline,
        auth: ApiKeyAuth,
        is_ready: Callable[[], bool],
    ) -> None:
        self.plane = plane
        self.pipeline = pipeline
        self.auth = auth
        self.is_ready = is_ready

    # ----- unmetered (REST: /v2/health/live, /v2/health/ready, /v2) -------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb2.ServerReadyResponse(ready=bool(self.is_ready()))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        meta = self.plane.server_metadata()
        return pb2.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    # ----- metered -------------------------------------------------------------------------------

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def run(_: dict[bytes, bytes], __: str) -> Any:
            ready = self.plane.model_ready(request.name)
            if ready and request.version:
                ready = self.plane.repository.get(request.name).model.version == request.version
            return pb2.ModelReadyResponse(ready=ready)

        return await self._metered("ModelReady", context, run)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def run(headers: dict[bytes, bytes], _: str) -> Any:
            self.auth.check_raw_headers(headers, "infer")
            meta = self.plane.model_metadata(request.name, request.version or None)
            tensor = pb2.ModelMetadataResponse.TensorMetadata
            return pb2.ModelMetadataResponse(
                name=meta.name,
                versions=meta.versions,
                platform=meta.platform,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
                properties={
                    k: v if isinstance(v, str) else json.dumps(v, default=str)
                    for k, v in meta.parameters.items()
                },
            )

        return await self._metered("ModelMetadata", context, run)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        plane = self.plane

        async def run(headers: dict[bytes, bytes], request_id: str) -> Any:
            self.auth.check_raw_headers(headers, "infer")
            parsed = parse_model_infer_request(request, max_rows=plane.max_rows)
            result = await plane.infer_parsed(
                request.model_name,
                parsed,
                version=request.model_version or None,
                request_id=request_id,
            )
            return infer_response(result)

        return await self._metered("ModelInfer", context, run)

    # ----- the pipeline ----------------------------------------------------------------------------

    async def _metered(
        self,
        rpc: str,
        context: grpc.aio.ServicerContext,
        run: Callable[[dict[bytes, bytes], str], Awaitable[Any]],
    ) -> Any:
        """Run one RPC through the request pipeline; errors become a gRPC status with their message."""
        headers = _metadata(context)
        template = f"/{SERVICE}/{rpc}"
        pipeline = self.pipeline
        flight = pipeline.begin(METHOD, template, headers)
        context.set_trailing_metadata((("x-request-id", flight.request_id),))
        try:
            out = await run(headers, flight.request_id)
        except PlatformError as exc:
            pipeline.finish(flight, template, exc.status_code)
            await context.abort(grpc_status(exc.status_code), exc.message)
        except asyncio.CancelledError:  # the client went away (or a forced stop)
            pipeline.finish(flight, template, 499)
            raise
        except Exception:  # noqa: BLE001 - never send an exception to the client
            log.exception("gRPC %s failed (request id %s)", rpc, flight.request_id)
            pipeline.finish(flight, template, 500)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        pipeline.finish(flight, template, 200)
        return out


class GrpcServer:
    """The grpc.aio server of model-serving: started and stopped by the app's lifespan."""

    def __init__(self, servicer: InferenceServicer, host: str, port: int, max_message_bytes: int) -> None:
        self.servicer = servicer
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.bound_port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        server = grpc.aio.server(
            options=[
                # the same body limit as REST (larger messages: RESOURCE_EXHAUSTED from gRPC itself)
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.bound_port = server.add_insecure_port(f"{host}:{self.port}")
        if not self.bound_port:
            raise RuntimeError(f"gRPC cannot bind {self.host}:{self.port}")
        await server.start()
        self._server = server
        log.info("gRPC (%s) listening on %s:%d", SERVICE, self.host, self.bound_port)
        return self.bound_port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace_s`` seconds, then cancel them."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
