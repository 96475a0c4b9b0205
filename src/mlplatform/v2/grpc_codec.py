"""The V2 gRPC codec: ``ModelInferRequest`` to a :class:`~mlplatform.v2.codec.ParsedRequest`, and an
answered request's outputs to a ``ModelInferResponse``.

Input tensors come either all as ``raw_input_contents`` (one bytes entry per input, in order:
little-endian, row-major; BOOL one byte per element; BYTES each element a 4-byte little-endian length
then its bytes, as the Open Inference Protocol and Triton define it) or each in its typed ``contents``
field (``fp32_contents`` for FP32, ``int_contents`` for INT8/16/32, ``uint_contents`` for UINT8/16/32,
``int64_contents``, ``uint64_contents``, ``fp64_contents``, ``bool_contents``, ``bytes_contents``; FP16
only raw). Header checks are the REST codec's (names, shapes, datatypes, the row limit); every client
mistake is :class:`~mlplatform.core.errors.InvalidInput` naming the input. Outputs are answered as
``raw_output_contents`` (:func:`encode_raw`), as Triton does (tritonclient and the kserve SDK both read
it). This module works on the generated messages but imports neither them nor grpcio.
"""

from __future__ import annotations

import math
import struct
import sys
from typing import Any

import numpy as np

from mlplatform.core.errors import InvalidInput
from mlplatform.v2.codec import WIRE_DTYPE, ParsedRequest, Tensor, split_bytes_elements
from mlplatform.v2.types import DATATYPE_SET, DATATYPES

#: the same in this machine's byte order (little-endian machines: the wire dtype itself, no copy)
_NATIVE = {k: v.newbyteorder("=") for k, v in WIRE_DTYPE.items()}
_LITTLE = sys.byteorder == "little"

#: the typed ``contents`` field each datatype is sent in (FP16 has none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(CONTENTS_FIELD.values()))
_LEN = struct.Struct("<I")


def _param(p: Any) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind is not None else None


def parameters(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict."""
    return {k: _param(v) for k, v in params.items()}


def _header(t: Any, index: int, max_rows: int) -> tuple[str, tuple[int, ...], str, int]:
    name = t.name
    if not name:
        raise InvalidInput(f"inputs[{index}].name: must be a non-empty string")
    shape = tuple(t.shape)
    if not shape or min(shape) < 0:
        raise InvalidInput(f"input '{name}': shape must be a non-empty list of non-negative integers")
    if shape[0] > max_rows:
        raise InvalidInput(f"input '{name}': {shape[0]} rows exceeds the limit of {max_rows} per request")
    datatype = t.datatype
    if datatype not in DATATYPE_SET:
        raise InvalidInput(f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    return name, shape, datatype, math.prod(shape)


def decode_raw(raw: bytes, datatype: str, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    """One input's ``raw_input_contents`` as an array of ``shape`` (BYTES: an object array of str)."""
    if datatype == "BYTES":
        return split_bytes_elements(raw, shape, name, "raw contents")
    wire = WIRE_DTYPE[datatype]
    if len(raw) != count * wire.itemsize:
        raise InvalidInput(
            f"input '{name}': raw contents have {len(raw)} bytes but shape {list(shape)} of {datatype} "
            f"needs {count * wire.itemsize}"
        )
    if datatype == "BOOL":
        u8 = np.frombuffer(raw, dtype=np.uint8)
        if (u8 > 1).any():
            raise InvalidInput(f"input '{name}': BOOL raw contents must be bytes 0 or 1")
        return u8.astype(np.bool_).reshape(shape)
    arr = np.frombuffer(raw, dtype=wire)  # read-only, over the request's bytes
    if not _LITTLE:
        arr = arr.astype(_NATIVE[datatype])
    return arr.reshape(shape)


def decode_contents(
    contents: Any, datatype: str, shape: tuple[int, ...], count: int, name: str
) -> np.ndarray:
    """One input's typed ``contents`` as an array of ``shape``; the field must match the datatype."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': datatype {datatype} can only be sent in raw_input_contents")
    for other in _ALL_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidInput(f"input '{name}': datatype {datatype} goes in contents.{field}, not {other}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': contents.{field} has {len(values)} elements but shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        try:
            items = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}': BYTES contents must be UTF-8 text") from None
        return np.array(items, dtype=object).reshape(shape)
    if datatype == "BOOL":
        return np.array(values, dtype=np.bool_).reshape(shape)
    target = _NATIVE[datatype]
    if target.kind in "iu":
        wide = np.array(values, dtype=np.int64 if field != "uint64_contents" else np.uint64)
        info = np.iinfo(target)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                f"input '{name}': a value is outside the range of {datatype} ({info.min}..{info.max})"
            )
        return wide.astype(target).reshape(shape)
    return np.array(values, dtype=target).reshape(shape)


def parse_model_infer_request(req: Any, *, max_rows: int = 10_000) -> ParsedRequest:
    """Check a ``ModelInferRequest`` and decode its tensors (422 naming the input on any mistake)."""
    inputs = req.inputs
    if not inputs:
        raise InvalidInput("inputs: must be a non-empty list of tensors")
    raws = req.raw_input_contents
    if raws and len(raws) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents: has {len(raws)} entries for {len(inputs)} inputs; send every input's data "
            "in raw_input_contents (one entry per input, in order) or every input's in contents"
        )
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i, t in enumerate(inputs):
        name, shape, datatype, count = _header(t, i, max_rows)
        if name in seen:
            raise InvalidInput(f"input '{name}': given more than once")
        seen.add(name)
        if raws:
            if t.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}': has contents although raw_input_contents is used; send one or the other"
                )
            array = decode_raw(raws[i], datatype, shape, count, name)
        else:
            array = decode_contents(t.contents, datatype, shape, count, name)
        tensors.append(Tensor(name=name, shape=shape, datatype=datatype, array=array))
    outputs = [o.name for o in req.outputs] if req.outputs else None
    if outputs is not None:
        for i, o in enumerate(outputs):
            if not o:
                raise InvalidInput(f"outputs[{i}].name: must be a non-empty string")
    return ParsedRequest(
        id=req.id or None, inputs=tensors, outputs=outputs, parameters=parameters(req.parameters)
    )


def encode_raw(arr: np.ndarray, datatype: str) -> bytes:
    """An output array's raw contents (little-endian, row-major; BYTES length-prefixed UTF-8)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in np.asarray(arr).reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LEN.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    if datatype == "BOOL":
        return np.ascontiguousarray(arr, dtype=np.bool_).tobytes()
    return np.ascontiguousarray(arr, dtype=WIRE_DTYPE[datatype]).tobytes()
