"""The V2 codec: request bodies to a model's input frame, with every client mistake a 4xx naming the input.

:func:`decode` is the one entry point: the common request (one number/boolean input per model column)
takes the one-pass fast path (:func:`fast_numeric_frame`); anything else is checked by hand by
:func:`parse_infer_document` (names, shapes, datatypes, element counts, NaN/Inf) and mapped onto the
schema by :func:`assemble_frame` (one input per signature column with shape ``[N]`` or ``[N, 1]``, or
a single 2-D ``[N, n_columns]`` input in signature order). Errors are
:class:`~mlplatform.core.errors.InvalidInput` (422) or :class:`~mlplatform.core.errors.BadRequest` (400).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlplatform.core.errors import BadRequest, InvalidInput
from mlplatform.v2.schema import COLUMN_ACCEPTS, COLUMN_DATATYPE, ColumnSpec, InputSchema
from mlplatform.v2.types import DATATYPE_SET, DATATYPES, FLOAT_TYPES, INT_TYPES, SIGNED_INT_TYPES

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_NON_FINITE.update({"infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf})


# ---------------------------------------------------------------------------------------------
# Parsed request
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tensor:
    """A validated input tensor: ``array`` already has ``shape``."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    array: np.ndarray


@dataclass(slots=True)
class ParsedRequest:
    """A validated V2 request body."""

    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None
    parameters: dict[str, Any] = field(default_factory=dict)
    # outputs to answer as binary data (the binary tensor extension): by name, or all of them
    binary_outputs: frozenset[str] = frozenset()
    all_binary: bool = False

    def binary(self, output: str) -> bool:
        """Whether ``output`` goes back as binary data (its own ``binary_data``, else the request's
        ``binary_data_output``)."""
        return output in self.binary_outputs or (self.all_binary and output not in self.json_outputs)

    json_outputs: frozenset[str] = frozenset()

    def input(self, name: str) -> Tensor | None:
        for t in self.inputs:
            if t.name == name:
                return t
        return None


def parse_infer_request(body: bytes, *, max_rows: int = 10_000) -> ParsedRequest:
    """Decode and check a V2 inference body (400 for malformed JSON, 422 for a bad document)."""
    return parse_infer_document(load_json(body), max_rows=max_rows)


def load_json(body: bytes) -> Any:
    """Decode a JSON request body (400 for malformed JSON)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def split_binary_body(body: bytes, header_length: bytes | str) -> tuple[Any, bytes]:
    """A binary-extension body: the JSON header (``Inference-Header-Content-Length`` bytes), then the
    binary data of the inputs that declare ``binary_data_size``. 400 for a bad header length."""
    raw = header_length.decode("latin-1") if isinstance(header_length, bytes) else header_length
    if not raw.strip().isdigit():
        raise BadRequest(f"Inference-Header-Content-Length: {raw!r} is not a byte count")
    n = int(raw)
    if n > len(body):
        raise BadRequest(f"Inference-Header-Content-Length: {n} is longer than the {len(body)}-byte body")
    return load_json(body[:n]), body[n:]


def parse_infer_document(doc: Any, *, max_rows: int = 10_000, binary: bytes | None = None) -> ParsedRequest:
    """Check an already-decoded V2 inference document (``binary``: the data after the JSON header of
    a binary-extension request)."""
    if type(doc) is not dict:
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidInput("inputs: must be a non-empty list of tensors")
    req_id = doc.get("id")
    if req_id is not None and type(req_id) is not str:
        raise InvalidInput("id: must be a string")
    params = doc.get("parameters") or {}
    if type(params) is not dict:
        raise InvalidInput("parameters: must be an object")
    all_binary = params.get("binary_data_output", False)
    if type(all_binary) is not bool:
        raise InvalidInput("parameters.binary_data_output: must be true or false")
    outputs: list[str] | None = None
    binary_outputs: set[str] = set()
    json_outputs: set[str] = set()
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if type(raw_outputs) is not list:
            raise InvalidInput("outputs: must be a list of {name} objects")
        outputs = []
        for i, o in enumerate(raw_outputs):
            name = o.get("name") if type(o) is dict else None
            if type(name) is not str:
                raise InvalidInput(f"outputs[{i}].name: must be a string")
            oparams = o.get("parameters") or {}
            if type(oparams) is not dict:
                raise InvalidInput(f"outputs[{i}].parameters: must be an object")
            flag = oparams.get("binary_data")
            if flag is not None and type(flag) is not bool:
                raise InvalidInput(f"outputs[{i}].parameters.binary_data: must be true or false")
            if flag:
                binary_outputs.add(name)
            elif flag is False:
                json_outputs.add(name)
            outputs.append(name)
    tensors: list[Tensor] = []
    seen: set[str] = set()
    offset = 0
    for i, raw in enumerate(raw_inputs):
        t, offset = _decode_input(raw, i, max_rows, binary, offset)
        if t.name in seen:
            raise InvalidInput(f"input '{t.name}': given more than once")
        seen.add(t.name)
        tensors.append(t)
    if binary is not None and offset != len(binary):
        raise BadRequest(
            f"binary data: {len(binary) - offset} bytes after the inputs' binary_data_size "
            f"({offset} of {len(binary)} bytes used)"
        )
    return ParsedRequest(
        id=req_id,
        inputs=tensors,
        outputs=outputs,
        parameters=params,
        binary_outputs=frozenset(binary_outputs),
        all_binary=all_binary,
        json_outputs=frozenset(json_outputs),
    )


def _decode_input(
    raw: Any, index: int, max_rows: int, binary: bytes | None, offset: int
) -> tuple[Tensor, int]:
    """One input: JSON ``data``, or ``binary_data_size`` bytes of the binary data at ``offset``."""
    params = raw.get("parameters") if type(raw) is dict else None
    size = params.get("binary_data_size") if type(params) is dict else None
    if size is None:
        return decode_tensor(raw, index, max_rows=max_rows), offset
    name, shape, datatype = _header(raw, index, max_rows)
    if type(size) is not int or size < 0:
        raise InvalidInput(f"input '{name}': parameters.binary_data_size must be a non-negative integer")
    if binary is None:
        raise BadRequest(
            f"input '{name}': binary_data_size given but the request has no binary data "
            "(send the Inference-Header-Content-Length header)"
        )
    if "data" in raw:
        raise InvalidInput(f"input '{name}': give either data or binary_data_size, not both")
    if offset + size > len(binary):
        raise BadRequest(
            f"input '{name}': binary_data_size {size} runs past the end of the binary data "
            f"({len(binary) - offset} bytes left)"
        )
    array = decode_binary(binary[offset : offset + size], datatype, shape, name)
    return Tensor(name=name, shape=tuple(shape), datatype=datatype, array=array), offset + size


#: numpy dtype of each datatype's little-endian wire form, binary extension and gRPC raw contents (BYTES:
#: handled apart)
WIRE_DTYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def split_bytes_elements(raw: bytes, shape: list[int] | tuple[int, ...], name: str, what: str) -> np.ndarray:
    """BYTES elements sent as bytes (each a 4-byte little-endian length, then its UTF-8 text), as the
    binary tensor extension and gRPC's ``raw_input_contents`` both carry them: an object array of str of
    ``shape``. ``what`` names the carrier in errors ("binary data", "raw contents")."""
    count = math.prod(shape)
    items: list[str] = []
    pos, end = 0, len(raw)
    view = memoryview(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(f"input '{name}': BYTES element {len(items)} has a truncated length prefix")
        n = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"input '{name}': BYTES element {len(items)} runs past its {what}")
        try:
            items.append(bytes(view[pos : pos + n]).decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}': BYTES element {len(items)} is not UTF-8 text") from None
        pos += n
    if len(items) != count:
        raise InvalidInput(
            f"input '{name}': {what} holds {len(items)} elements but shape {list(shape)} needs {count}"
        )
    return np.array(items, dtype=object).reshape(shape)


def decode_binary(raw: bytes, datatype: str, shape: list[int] | tuple[int, ...], name: str) -> np.ndarray:
    """An input's binary data (little-endian, row-major; BYTES as 4-byte-length-prefixed elements) as the
    array JSON ``data`` would have given: float64 for floats, int64 for integers (uint64 above the int64
    range), bool, or str objects for BYTES."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return split_bytes_elements(raw, shape, name, "binary data")
    wire = WIRE_DTYPE[datatype]
    if len(raw) != count * wire.itemsize:
        raise InvalidInput(
            f"input '{name}': binary_data_size {len(raw)} does not match shape {list(shape)} of {datatype} "
            f"({count} x {wire.itemsize} bytes)"
        )
    arr = np.frombuffer(raw, dtype=wire).reshape(shape)
    if datatype == "BOOL":
        if len(raw) and max(raw) > 1:
            raise InvalidInput(f"input '{name}': BOOL binary data takes bytes 0 and 1")
        return arr.astype(np.bool_)
    if datatype in FLOAT_TYPES:
        return arr.astype(np.float64)
    if datatype == "UINT64" and arr.size and int(arr.max()) > _INT64_MAX:
        return arr.astype(np.uint64)
    return arr.astype(np.int64)


def output_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """An output array as binary data (the binary tensor extension)."""
    if datatype == "BYTES":
        parts = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts += (len(b).to_bytes(4, "little"), b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=WIRE_DTYPE[datatype]).tobytes()


MAX_DIMS = 8


def _header(raw: Any, index: int, max_rows: int) -> tuple[str, list[int], str]:
    """An input's name, shape and datatype, checked."""
    if type(raw) is not dict:
        raise InvalidInput(f"inputs[{index}]: must be an object with name, shape, datatype, data")
    name = raw.get("name")
    if type(name) is not str or not name:
        raise InvalidInput(f"inputs[{index}].name: must be a non-empty string")
    shape = raw.get("shape")
    if type(shape) is not list or not shape:
        raise InvalidInput(f"input '{name}': shape must be a non-empty list of non-negative integers")
    for d in shape:
        if type(d) is not int or d < 0:
            raise InvalidInput(f"input '{name}': shape must be a non-empty list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input '{name}': shape {shape} has {len(shape)} dimensions; at most {MAX_DIMS}")
    if shape[0] > max_rows:
        raise InvalidInput(f"input '{name}': {shape[0]} rows exceeds the limit of {max_rows} per request")
    datatype = raw.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPE_SET:  # a list/dict is unhashable
        raise InvalidInput(f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    return name, shape, datatype


def decode_tensor(raw: Any, index: int = 0, *, max_rows: int = 10_000) -> Tensor:
    """Validate one V2 input tensor and turn its data (flat, or nested row-major as its shape) into a
    numpy array of its shape."""
    name, shape, datatype = _header(raw, index, max_rows)
    data = raw.get("data")
    if type(data) is not list:
        raise InvalidInput(f"input '{name}': data must be a list")
    count = math.prod(shape)
    flat = _flatten(data, name, shape)
    if len(flat) != count:
        raise InvalidInput(f"input '{name}': data has {len(flat)} elements but shape {shape} needs {count}")
    array = _to_array(flat, datatype, name)
    if len(shape) > 1:
        array = array.reshape(shape)
    return Tensor(name=name, shape=tuple(shape), datatype=datatype, array=array)


def _flatten(data: list[Any], name: str, shape: list[int]) -> list[Any]:
    """Flat data as is; nested data checked against ``shape`` (row-major) and flattened."""
    if not data or type(data[0]) is not list:
        if len(data) > 1:
            for v in data:
                if type(v) is list:
                    raise InvalidInput(f"input '{name}': data mixes nested lists and scalars")
        return data
    out: list[Any] = []

    def walk(level: list[Any], depth: int) -> None:
        if depth >= len(shape):
            raise InvalidInput(f"input '{name}': data is nested deeper than its shape {shape} allows")
        if len(level) != shape[depth]:
            raise InvalidInput(
                f"input '{name}': data has {len(level)} entries at depth {depth} but shape {shape} needs "
                f"{shape[depth]}"
            )
        last = depth == len(shape) - 1
        for v in level:
            if type(v) is list:
                if last:
                    raise InvalidInput(f"input '{name}': data is nested deeper than its shape {shape} allows")
                walk(v, depth + 1)
            elif not last:
                raise InvalidInput(f"input '{name}': data mixes nested lists and scalars")
            else:
                out.append(v)

    walk(data, 0)
    return out


_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": math.inf}


def _to_array(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    if datatype in FLOAT_TYPES:
        values = flat
        for i, v in enumerate(flat):
            tv = type(v)
            if tv is float or tv is int:
                continue
            if tv is str and v.strip().lower() in _NON_FINITE:
                if values is flat:
                    values = list(flat)
                values[i] = _NON_FINITE[v.strip().lower()]
                continue
            raise InvalidInput(f"input '{name}': element {i} ({v!r}) is not a number for datatype {datatype}")
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:
            raise InvalidInput(f"input '{name}': number out of the {datatype} range") from None
        limit = _FLOAT_MAX[datatype]
        if limit != math.inf and len(arr):
            finite = arr[np.isfinite(arr)]
            if len(finite) and float(np.abs(finite).max()) > limit:
                raise InvalidInput(f"input '{name}': number out of the {datatype} range (largest {limit:g})")
        return arr
    if datatype in INT_TYPES:
        low, high = _INT_RANGES[datatype]
        for i, v in enumerate(flat):
            if type(v) is not int:
                raise InvalidInput(
                    f"input '{name}': element {i} ({v!r}) is not an integer for datatype {datatype}"
                )
            if not low <= v <= high:
                shown = str(v) if len(str(v)) <= 24 else f"{str(v)[:20]}...({len(str(v))} digits)"
                raise InvalidInput(
                    f"input '{name}': element {i} ({shown}) is out of the {datatype} range [{low}, {high}]"
                )
        if datatype == "UINT64" and flat and max(flat) > _INT64_MAX:
            return np.asarray(flat, dtype=np.uint64)
        return np.asarray(flat, dtype=np.int64)
    if datatype == "BOOL":
        for i, v in enumerate(flat):
            if type(v) is not bool:
                raise InvalidInput(f"input '{name}': element {i} ({v!r}) is not true/false for datatype BOOL")
        return np.asarray(flat, dtype=np.bool_)
    # BYTES: strings
    for i, v in enumerate(flat):
        if type(v) is not str:
            raise InvalidInput(f"input '{name}': element {i} ({v!r}) is not a string for datatype BYTES")
    return np.asarray(flat, dtype=object)


@dataclass(slots=True)
class Frame:
    """Rows in signature column order: a float64 matrix (numeric schemas) or per-column arrays."""

    matrix: np.ndarray | None
    columns: dict[str, np.ndarray]
    n_rows: int


def is_entity_request(req: ParsedRequest, schema: InputSchema, keys: Collection[str]) -> bool:
    """True when the request names entity ``keys`` (the model's feature service's) that the model does not
    take directly: its other inputs come from a feature lookup."""
    if not keys:
        return False
    names = set(schema.names)
    return any(t.name in keys and t.name not in names for t in req.inputs)


def _column_vector(t: Tensor) -> np.ndarray:
    if len(t.shape) == 1:
        return t.array
    if len(t.shape) > 2 or t.shape[1] != 1:
        raise InvalidInput(
            f"input '{t.name}': shape {list(t.shape)} is not a column; use [N] or [N, 1] per column, "
            "or one 2-D input with every column"
        )
    return t.array.reshape(-1)


def _check_values(name: str, col: ColumnSpec, t_datatype: str, arr: np.ndarray, allow_nan: bool) -> None:
    if t_datatype not in COLUMN_ACCEPTS[col.type]:
        raise InvalidInput(
            f"input '{name}': datatype {t_datatype} does not match column type {col.type} "
            f"(send {COLUMN_DATATYPE[col.type]})"
        )
    if col.type == "boolean" and t_datatype != "BOOL" and len(arr) and ((arr != 0) & (arr != 1)).any():
        raise InvalidInput(f"input '{name}': boolean column takes true/false or 0/1")
    if not allow_nan and t_datatype in FLOAT_TYPES:
        finite = math.isfinite(arr[0]) if len(arr) == 1 else bool(np.isfinite(arr).all())
        if not finite:
            raise InvalidInput(f"input '{name}': NaN or Inf is not allowed")


def _check_matrix_column(t: Tensor, j: int, col: ColumnSpec, allow_nan: bool) -> None:
    """A 2-D input has one datatype for every column: floats may feed integer/boolean columns if integral."""
    vec = t.array[:, j]
    if t.datatype in FLOAT_TYPES and col.type in ("long", "integer", "boolean"):
        if not np.isfinite(vec).all() or (vec != np.round(vec)).any():
            raise InvalidInput(f"input '{t.name}': column {j} ({col.name}) needs whole numbers")
        if col.type == "boolean" and ((vec != 0) & (vec != 1)).any():
            raise InvalidInput(f"input '{t.name}': column {j} ({col.name}) is boolean and takes 0 or 1")
        return
    try:
        _check_values(t.name, col, t.datatype, vec, allow_nan)
    except InvalidInput as exc:
        raise InvalidInput(
            exc.message.replace(f"input '{t.name}':", f"input '{t.name}' column {j} ({col.name}):")
        ) from None


def assemble_frame(req: ParsedRequest, schema: InputSchema, *, allow_nan: bool = False) -> Frame:
    """Map request tensors onto the schema's columns (422 naming the input on any mismatch)."""
    cols = schema.columns
    by_name = schema.index()
    spec = schema.tensor
    if spec is not None and not all(t.name in by_name for t in req.inputs):
        # a tensor signature: its one [N, k] input (inputs named f0.. per column are taken below)
        if len(req.inputs) != 1:
            raise InvalidInput(
                f"inputs: this model takes one input '{spec.name}' of shape {list(spec.shape)}; "
                f"got {len(req.inputs)} inputs"
            )
        if req.inputs[0].name != spec.name:
            raise InvalidInput(
                f"input '{req.inputs[0].name}': not an input of this model (its input is '{spec.name}', "
                f"shape {list(spec.shape)}, datatype {spec.datatype})"
            )
    # A single 2-D input holding every column in order.
    if len(req.inputs) == 1 and (len(cols) > 1 or spec is not None) and req.inputs[0].name not in by_name:
        t = req.inputs[0]
        if len(t.shape) != 2 or t.shape[1] != len(cols):
            raise InvalidInput(
                f"input '{t.name}': a single input must have shape [N, {len(cols)}] holding the columns "
                f"{', '.join(schema.names)} in order (or send one input per column); got shape {list(t.shape)}"
            )
        n = t.shape[0]
        for j, c in enumerate(cols):
            _check_matrix_column(t, j, c, allow_nan)
        if schema.numeric:
            return Frame(matrix=t.array.astype(np.float64, copy=False), columns={}, n_rows=n)
        return Frame(matrix=None, columns={c.name: t.array[:, j] for j, c in enumerate(cols)}, n_rows=n)

    given = {t.name: t for t in req.inputs}
    extra = [name for name in given if name not in by_name]
    if extra:
        raise InvalidInput(
            f"input '{extra[0]}': not an input of this model (inputs: {', '.join(schema.names)})"
        )
    missing = [c.name for c in cols if c.name not in given]
    if missing:
        raise InvalidInput(f"input '{missing[0]}': missing ({len(missing)} of {len(cols)} inputs missing)")
    n_rows: int | None = None
    vectors: list[np.ndarray] = []
    for c in cols:
        t = given[c.name]
        vec = _column_vector(t)
        if n_rows is None:
            n_rows = len(vec)
        elif len(vec) != n_rows:
            raise InvalidInput(f"input '{c.name}': has {len(vec)} rows but other inputs have {n_rows}")
        _check_values(c.name, c, t.datatype, vec, allow_nan)
        vectors.append(vec)
    assert n_rows is not None
    if schema.numeric:
        if n_rows == 1:
            matrix = np.array([[v[0] for v in vectors]], dtype=np.float64)
        else:
            matrix = np.column_stack(vectors).astype(np.float64, copy=False)
        return Frame(matrix=matrix, columns={}, n_rows=n_rows)
    return Frame(matrix=None, columns={c.name: v for c, v in zip(cols, vectors, strict=True)}, n_rows=n_rows)


def fast_numeric_frame(
    doc: Any, schema: InputSchema, *, allow_nan: bool = False, max_rows: int = 10_000
) -> Frame | None:
    """The common request in one pass: one number/boolean input per model column, no ``outputs`` selection.

    Returns ``None`` for anything else (a 2-D input, entity keys, strings, unsigned types, NaN,
    unknown or missing names, mismatched lengths, a bad ``id``): the general parser then accepts the
    request or raises the error that names the input. For what it accepts, the result is the frame
    :func:`assemble_frame` builds, without a numpy array and a ``Tensor`` per input.
    """
    plan = schema.fast_plan
    if plan is None or type(doc) is not dict or "outputs" in doc:
        return None
    inputs = doc.get("inputs")
    if type(inputs) is not list or len(inputs) != len(plan):
        return None
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        return None
    params = doc.get("parameters")
    if params is not None and (
        type(params) is not dict or type(params.get("binary_data_output", False)) is not bool
    ):
        return None
    cols: list[Any] = [None] * len(plan)
    n = -1
    for raw in inputs:
        try:
            name = raw["name"]
            datatype = raw["datatype"]
            data = raw["data"]
            shape = raw["shape"]
        except (KeyError, TypeError, IndexError):  # not an object, or a key missing
            return None
        if (
            type(name) is not str
            or type(datatype) is not str
            or type(data) is not list
            or type(shape) is not list
        ):
            return None
        spec = plan.get(name)
        if spec is None:
            return None
        pos, accepts, kind = spec
        if cols[pos] is not None or datatype not in accepts:
            return None
        m = len(data)
        if len(shape) == 1:
            if shape[0] != m or type(shape[0]) is not int:
                return None
        elif (
            len(shape) != 2
            or shape[0] != m
            or shape[1] != 1
            or type(shape[0]) is not int
            or type(shape[1]) is not int
        ):
            return None
        if n != m:
            if n >= 0 or m == 0:  # rows differ between inputs, or no rows
                return None
            n = m
        if datatype == "BOOL":
            for v in data:
                if type(v) is not bool:
                    return None
        elif kind == "bool":
            for v in data:
                if type(v) is not int or (v != 0 and v != 1):
                    return None
        elif kind == "int" or datatype in SIGNED_INT_TYPES:
            low, high = _INT_RANGES[datatype]
            for v in data:
                if type(v) is not int or v < low or v > high:
                    return None  # the general path names the element and the range
        else:
            limit = _FLOAT_MAX[datatype]
            for v in data:
                tv = type(v)
                if tv is float or tv is int:
                    if tv is float and v - v != 0.0 and not allow_nan:  # NaN or +-Inf
                        return None
                    if v > limit or v < -limit:
                        return None
                else:
                    return None
        cols[pos] = data
    if n > max_rows:
        return None
    try:
        if n == 1:
            matrix = np.array([[c[0] for c in cols]], dtype=np.float64)
        else:
            matrix = np.ascontiguousarray(np.array(cols, dtype=np.float64).T)
    except (OverflowError, ValueError, TypeError):  # an int beyond the float range
        return None
    return Frame(matrix=matrix, columns={}, n_rows=n)


def frame_from_rows(rows: list[dict[str, Any]], schema: InputSchema, *, allow_nan: bool = False) -> Frame:
    """Build a frame from per-row dicts (entity-based inference after the feature lookup)."""
    n = len(rows)
    vectors: list[np.ndarray] = []
    for c in schema.columns:
        values = []
        for i, row in enumerate(rows):
            if c.name not in row or row[c.name] is None:
                raise InvalidInput(
                    f"input '{c.name}': no value for row {i} (not sent and not in the feature store)"
                )
            values.append(row[c.name])
        if c.type == "string":
            vectors.append(np.asarray([str(v) for v in values], dtype=object))
            continue
        try:
            vec = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInput(f"input '{c.name}': value is not a number") from None
        if not allow_nan and not np.isfinite(vec).all():
            raise InvalidInput(f"input '{c.name}': NaN or Inf is not allowed")
        vectors.append(vec)
    if schema.numeric:
        matrix = np.column_stack(vectors) if vectors else np.zeros((n, 0))
        return Frame(matrix=matrix.astype(np.float64, copy=False), columns={}, n_rows=n)
    return Frame(
        matrix=None, columns={c.name: v for c, v in zip(schema.columns, vectors, strict=True)}, n_rows=n
    )


def entity_rows(req: ParsedRequest, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Turn the inputs of an entity request into per-row dicts (entity ``keys`` + request-time fields);
    422 naming a missing key."""
    n_rows: int | None = None
    vectors: dict[str, np.ndarray] = {}
    for t in req.inputs:
        vec = _column_vector(t)
        if n_rows is None:
            n_rows = len(vec)
        elif len(vec) != n_rows:
            raise InvalidInput(f"input '{t.name}': has {len(vec)} rows but other inputs have {n_rows}")
        vectors[t.name] = vec
    for key in keys:
        if key not in vectors:
            raise InvalidInput(f"input '{key}': missing (entity requests need {' and '.join(keys)})")
    lists = {k: v.tolist() for k, v in vectors.items()}
    return [{k: v[i] for k, v in lists.items()} for i in range(n_rows or 0)]


def decode(
    doc: Any,  # noqa: ANN401 - a decoded JSON document, checked here
    schema: InputSchema,
    *,
    entity_keys: Collection[str] = (),
    allow_nan: bool = False,
    max_rows: int = 10_000,
) -> tuple[Frame | None, ParsedRequest | None]:
    """A decoded V2 inference document as the model's input frame.

    Returns ``(frame, None)`` for the common request (the fast path: no ``Tensor`` objects),
    ``(frame, request)`` for any other valid request, and ``(None, request)`` for a request that names
    ``entity_keys`` (the model's feature service's) instead of the model's inputs (the caller fetches the
    features, then :func:`frame_from_rows`). Raises the 4xx naming the input for anything invalid.
    """
    frame = fast_numeric_frame(doc, schema, allow_nan=allow_nan, max_rows=max_rows)
    if frame is not None:
        return frame, None
    req = parse_infer_document(doc, max_rows=max_rows)
    if is_entity_request(req, schema, entity_keys):
        return None, req
    return assemble_frame(req, schema, allow_nan=allow_nan), req
