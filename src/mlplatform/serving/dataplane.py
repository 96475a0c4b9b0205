"""The transport-free serving data plane: what the REST routes and the tests drive."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from mlplatform import __version__
from mlplatform.core.errors import InvalidInput, NotFound, PlatformError
from mlplatform.core.payloads import PayloadBatch, PayloadSink, PredictionIds
from mlplatform.core.secrets import SecretsBackend, follow_secret
from mlplatform.features.client import build_feature_client
from mlplatform.features.enrich import FeatureEnricher
from mlplatform.serving.batching import BatcherClosed
from mlplatform.serving.metrics import (
    OUTCOME_CLIENT_ERROR,
    OUTCOME_ERROR,
    OUTCOME_OK,
    OUTCOME_UNAVAILABLE,
    ServingMetrics,
)
from mlplatform.serving.repository import ModelHandle, ModelRepository
from mlplatform.serving.runtimes import Prediction
from mlplatform.serving.settings import ServingSettings
from mlplatform.v2.codec import (
    Frame,
    ParsedRequest,
    assemble_frame,
    decode,
    frame_from_rows,
    is_entity_request,
    load_json,
    output_bytes,
    parse_infer_document,
    split_binary_body,
)
from mlplatform.v2.schema import COLUMN_DATATYPE
from mlplatform.v2.types import MetadataTensor, ModelMetadata, ServerMetadata

log = logging.getLogger("mlplatform.serving.dataplane")

_OUT_DATATYPE = {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL"}


def output_datatype(arr: np.ndarray) -> str:
    """The V2 datatype an output array is answered with (strings and objects: BYTES)."""
    return _OUT_DATATYPE.get(arr.dtype.kind, "BYTES")


@dataclass(slots=True)
class InferResult:
    """One answered inference request, transport-free: REST renders it as JSON, gRPC as a
    ``ModelInferResponse``."""

    model_name: str
    model_version: str
    id: str
    prediction_id: str
    outputs: list[tuple[str, np.ndarray]]  # the requested outputs (all, by default), in order
    binary: list[bool] = field(default_factory=list)  # per output: answer as binary data (REST extension)


def render_rest(result: InferResult) -> bytes | tuple[bytes, list[tuple[bytes, bytes]]]:
    """The V2 REST response: JSON, or (with outputs as binary data) the JSON header followed by their
    bytes, ``Inference-Header-Content-Length`` and ``application/octet-stream``."""
    docs = []
    blobs: list[bytes] = []
    for i, (key, arr) in enumerate(result.outputs):
        dt = output_datatype(arr)
        doc: dict[str, Any] = {"name": key, "shape": list(arr.shape), "datatype": dt}
        if i < len(result.binary) and result.binary[i]:
            blob = output_bytes(arr, dt)
            blobs.append(blob)
            doc["parameters"] = {"binary_data_size": len(blob)}
        else:
            doc["data"] = arr if dt != "BYTES" else [_text(v) for v in arr.reshape(-1)]
        docs.append(doc)
    header = orjson.dumps(
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "id": result.id,
            "parameters": {"prediction_id": result.prediction_id},
            "outputs": docs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not blobs:
        return header
    return b"".join([header, *blobs]), [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(header)).encode()),
    ]


def _text(value: Any) -> str:  # noqa: ANN401 - an element of an object array
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _select_outputs(pred: Prediction, wanted: list[str] | None) -> list[tuple[str, np.ndarray]]:
    outputs = pred.outputs
    if wanted is None:
        return list(outputs.items())
    for w in wanted:
        if w not in outputs:
            raise InvalidInput(
                f"outputs: '{w}' is not an output of this model (outputs: {', '.join(outputs)})"
            )
    return [(w, outputs[w]) for w in wanted]


def _checked(handle: ModelHandle, frame: Frame) -> Frame:
    """The frame a model's batcher takes: text models check theirs per request, before batching (strings,
    not empty, within the context) and hand it on with what the check computed (token ids)."""
    check = getattr(handle.model.runtime, "check_frame", None)
    return frame if check is None else check(frame)


class ServingDataPlane:
    """Inference, metadata and readiness over the model repository; owns the repository and the clients
    it builds from settings (feature store, payload logger), started and stopped with it."""

    def __init__(
        self,
        settings: ServingSettings,
        metrics: ServingMetrics,
        *,
        secrets: SecretsBackend,
        registry: CollectorRegistry,
        repository: ModelRepository | None = None,
        feature_client: Any = None,
        payload_sink: PayloadSink | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository or ModelRepository(settings, metrics)
        self.metrics = metrics
        self._secrets = secrets
        self._registry = registry
        self._owned_client: Any = None  # the feature-store client built here (closed on stop)
        self._owned_logger: Any = None  # the payload logger built here
        self.enricher = FeatureEnricher(
            feature_client,
            deadline_s=settings.resolved_feature_deadline_s(),
            url_setting=settings.feature_store_url_setting,
            action="inference",
            fallback_defaults=settings.feature_fallback_defaults,
            on_failure=lambda model, reason: metrics.feature_store_failures.labels(model, reason).inc(),
        )
        self.payload_sink = payload_sink
        self.prediction_ids = PredictionIds()
        self.max_rows = settings.max_rows_per_request
        self.allow_nan = settings.allow_nan

    @property
    def feature_client(self) -> Any:  # noqa: ANN401 - a FeatureStoreClient or a test's stand-in
        """The feature-store client entity requests are enriched through (None: entity requests get 422)."""
        return self.enricher.client

    @feature_client.setter
    def feature_client(self, client: Any) -> None:  # noqa: ANN401
        self.enricher.client = client

    # ----- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the clients it was not handed (feature store when ``SERVING_FEATURE_STORE_URL`` is set,
        payload logger when ``SERVING_DRIFT_URL`` is), then start loading the models."""
        settings = self.settings
        if self.feature_client is None and settings.feature_store_url:
            self.feature_client = self._owned_client = build_feature_client(
                settings, self._secrets, self._registry
            )
        if self.payload_sink is None and settings.drift_url:
            self._owned_logger = _payload_logger(settings, self._secrets, self._registry)
            await self._owned_logger.start()
            self.payload_sink = self._owned_logger
        await self.repository.start()

    async def stop(self) -> None:
        """Drain and unload the models, then flush and close what :meth:`start` built."""
        await self.repository.stop()
        if self._owned_logger is not None:
            await self._owned_logger.stop()
            self.payload_sink = self._owned_logger = None
        if self._owned_client is not None:
            await self._owned_client.aclose()
            self.feature_client = self._owned_client = None

    # ----- metadata -----------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.repository.ready()

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(
            name="mlplatform-model-serving", version=__version__, extensions=["model_repository"]
        )

    def model_ready(self, name: str) -> bool:
        slot = self.repository.slots.get(name)
        if slot is None:
            raise NotFound(f"model '{name}' is not served here (served: {', '.join(self.repository.slots)})")
        return slot.handle is not None

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        handle = self._handle(name, version)
        m = handle.model
        return ModelMetadata(
            name=m.name,
            versions=[m.version],
            platform=m.platform,
            inputs=(
                [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))]
                if (t := m.schema.tensor) is not None
                else [
                    MetadataTensor(name=c.name, datatype=COLUMN_DATATYPE[c.type], shape=[-1])
                    for c in m.schema.columns
                ]
            ),
            outputs=m.outputs,
            parameters=m.metadata_parameters(),
        )

    def _handle(self, name: str, version: str | None) -> ModelHandle:
        handle = self.repository.get(name)
        if version is not None and handle.model.version != version:
            raise NotFound(
                f"model '{name}' version {version} is not loaded (serving version {handle.model.version})"
            )
        return handle

    # ----- inference ----------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        body: bytes,
        *,
        version: str | None = None,
        request_id: str = "",
        header_length: bytes | None = None,
    ) -> bytes | tuple[bytes, list[tuple[bytes, bytes]]]:
        """Run one V2 REST inference request; returns the JSON response body, or (body, headers) when
        outputs go back as binary data. ``header_length``: the ``Inference-Header-Content-Length`` of a
        binary-extension request (JSON header, then the inputs' binary data)."""
        if header_length is None:
            result = await self._run(name, version, request_id, body=body)
        else:
            doc, blob = split_binary_body(body, header_length)
            req = parse_infer_document(doc, max_rows=self.max_rows, binary=blob)
            result = await self._run(name, version, request_id, req=req)
        return render_rest(result)

    async def infer_parsed(
        self, name: str, req: ParsedRequest, *, version: str | None = None, request_id: str = ""
    ) -> InferResult:
        """Run one inference request already decoded into tensors (gRPC, binary REST): the same
        validation, batching, metrics and payload logging as :meth:`infer`."""
        return await self._run(name, version, request_id, req=req)

    async def _run(
        self,
        name: str,
        version: str | None,
        request_id: str,
        *,
        body: bytes | None = None,
        req: ParsedRequest | None = None,
    ) -> InferResult:
        start = time.perf_counter()
        model_version = version or "unknown"
        try:
            handle = self._handle(name, version)
            model_version = handle.model.version
            doc = load_json(body) if body is not None else None
            frame, inputs_rows, req = await self._frame(handle, doc, req)
            try:
                pred = await handle.batcher.submit(_checked(handle, frame))
            except BatcherClosed:
                # swapped while we waited for features: run on the version now being served
                handle = self._handle(name, version)
                model_version = handle.model.version
                frame, inputs_rows, req = await self._frame(handle, doc, req)
                pred = await handle.batcher.submit(_checked(handle, frame))
            if req is None:  # the fast path: a plain dict document
                rid, wanted = doc.get("id") or request_id, None  # type: ignore[union-attr]
                params = doc.get("parameters")  # type: ignore[union-attr]
                all_binary = bool(params and params.get("binary_data_output"))
                outputs = _select_outputs(pred, wanted)
                binary = [all_binary] * len(outputs)
            else:
                rid, wanted = req.id or request_id, req.outputs
                outputs = _select_outputs(pred, wanted)
                binary = [req.binary(key) for key, _ in outputs]
            result = InferResult(
                model_name=handle.model.name,
                model_version=handle.model.version,
                id=rid,
                prediction_id=self.prediction_ids.next(),
                outputs=outputs,
                binary=binary,
            )
        except PlatformError as exc:
            if exc.status_code in (503, 504):
                outcome = OUTCOME_UNAVAILABLE
            elif exc.status_code >= 500:
                outcome = OUTCOME_ERROR
            else:
                outcome = OUTCOME_CLIENT_ERROR
            label = name if name in self.repository.slots else "unknown"
            self.metrics.observe_request(label, model_version, outcome, time.perf_counter() - start)
            raise
        except Exception:
            self.metrics.observe_request(name, model_version, OUTCOME_ERROR, time.perf_counter() - start)
            raise
        self.metrics.observe_request(name, model_version, OUTCOME_OK, time.perf_counter() - start)
        if self.payload_sink is not None:
            self._log_payloads(handle, rid, result.prediction_id, frame, inputs_rows, pred)
        return result

    async def _frame(
        self, handle: ModelHandle, doc: Any, req: ParsedRequest | None
    ) -> tuple[Frame, list[dict[str, Any]] | None, ParsedRequest | None]:
        """The model's input frame from a JSON document (the codec, fast path inside) or decoded
        tensors; entity-keyed requests get their features from the feature store."""
        model = handle.model
        schema = model.schema
        keys = model.request_keys
        if req is None:
            frame, req = decode(
                doc, schema, entity_keys=keys, allow_nan=self.allow_nan, max_rows=self.max_rows
            )
        else:
            frame = (
                None
                if is_entity_request(req, schema, keys)
                else assemble_frame(req, schema, allow_nan=self.allow_nan)
            )
        if frame is not None:
            return frame, None, req
        assert req is not None
        rows = await self.enricher.rows(
            req,
            schema,
            name=model.name,
            label=f"'{model.name}'",
            feature_service=model.feature_service,
            keys=keys,
            defaults=model.defaults,
        )
        return frame_from_rows(rows, schema, allow_nan=self.allow_nan), rows, req

    def _log_payloads(
        self,
        handle: ModelHandle,
        rid: str,
        pid: str,
        frame: Frame,
        rows: list[dict[str, Any]] | None,
        pred: Prediction,
    ) -> None:
        """Hand the request's rows to the payload sink by column (no per-row objects on this path)."""
        sink = self.payload_sink
        assert sink is not None
        try:
            model = handle.model
            span_ctx = trace.get_current_span().get_span_context()
            extra = None
            if rows is not None:
                extra = {k: [r.get(k) for r in rows] for k in model.entity_keys if k in rows[0]}
            sink.submit(
                PayloadBatch(
                    request_id=rid,
                    prediction_id=pid,
                    model=model.name,
                    version=model.version,
                    timestamp=time.time(),
                    names=model.schema.names,
                    matrix=frame.matrix,
                    columns=frame.columns if frame.matrix is None else None,
                    extra=extra,
                    outputs=pred.outputs,
                    n_rows=frame.n_rows,
                    trace_id=format(span_ctx.trace_id, "032x") if span_ctx.is_valid else "",
                    span_id=format(span_ctx.span_id, "016x") if span_ctx.is_valid else "",
                )
            )
        except Exception:  # noqa: BLE001 - payload logging must never fail a prediction
            log.exception("could not hand inference payloads to the payload logger")


def _payload_logger(settings: ServingSettings, secrets: SecretsBackend, registry: CollectorRegistry) -> Any:  # noqa: ANN401
    """The payload logger to drift detection (imported lazily: a serving image without it never loads it)."""
    from mlplatform.drift.payload_logger import PayloadLogger

    kwargs: dict[str, Any] = dict(
        batch_size=settings.payload_batch_size,
        sample_rate=settings.payload_sample_rate,
        spool_dir=settings.resolved_spool_dir(),
        spool_max_bytes=settings.payload_spool_max_bytes,
        flush_interval_s=settings.payload_flush_interval_s,
        drain_timeout_s=settings.payload_drain_timeout_s,
        registry=registry,
    )
    api_key = secrets.get(settings.drift_api_key_secret)
    if api_key:
        kwargs["api_key"] = api_key
    logger = PayloadLogger(settings.drift_url, **kwargs)
    follow_secret(secrets, settings.drift_api_key_secret, logger.set_api_key)
    return logger
