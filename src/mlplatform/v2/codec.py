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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlplatform.core.errors import BadRequest, InvalidInput
from mlplatform.v2.schema import COLUMN_ACCEPTS, COLUMN_DATATYPE, ColumnSpec, InputSchema
from mlplatform.v2.types import DATATYPE_SET, DATATYPES, FLOAT_TYPES, INT_TYPES, SIGNED_INT_TYPES

ENTITY_KEYS = ("user_id", "merchant_id")
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


def parse_infer_document(doc: Any, *, max_rows: int = 10_000) -> ParsedRequest:
    """Check an already-decoded V2 inference document."""
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
    outputs: list[str] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if type(raw_outputs) is not list:
            raise InvalidInput("outputs: must be a list of {name} objects")
        outputs = []
        for i, o in enumerate(raw_outputs):
            name = o.get("name") if type(o) is dict else None
            if type(name) is not str:
                raise InvalidInput(f"outputs[{i}].name: must be a string")
            outputs.append(name)
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_inputs):
        t = decode_tensor(raw, i, max_rows=max_rows)
        if t.name in seen:
            raise InvalidInput(f"input '{t.name}': given more than once")
        seen.add(t.name)
        tensors.append(t)
    return ParsedRequest(id=req_id, inputs=tensors, outputs=outputs, parameters=params)


def decode_tensor(raw: Any, index: int = 0, *, max_rows: int = 10_000) -> Tensor:
    """Validate one V2 input tensor and turn its data into a numpy array of its shape."""
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
    ndim = len(shape)
    if ndim > 2:
        raise InvalidInput(f"input '{name}': shape {shape} has {ndim} dimensions; at most 2 allowed")
    if shape[0] > max_rows:
        raise InvalidInput(f"input '{name}': {shape[0]} rows exceeds the limit of {max_rows} per request")
    datatype = raw.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPE_SET:  # a list/dict is unhashable
        raise InvalidInput(f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    data = raw.get("data")
    if type(data) is not list:
        raise InvalidInput(f"input '{name}': data must be a list")
    count = shape[0] if ndim == 1 else shape[0] * shape[1]
    flat = _flatten(data, name)
    if len(flat) != count:
        raise InvalidInput(f"input '{name}': data has {len(flat)} elements but shape {shape} needs {count}")
    array = _to_array(flat, datatype, name)
    if ndim == 2:
        array = array.reshape(shape)
    return Tensor(name=name, shape=tuple(shape), datatype=datatype, array=array)


def _flatten(data: list[Any], name: str) -> list[Any]:
    if not data or type(data[0]) is not list:
        if len(data) > 1:
            for v in data:
                if type(v) is list:
                    raise InvalidInput(f"input '{name}': data mixes nested lists and scalars")
        return data
    out: list[Any] = []
    for row in data:
        if type(row) is not list:
            raise InvalidInput(f"input '{name}': data mixes nested lists and scalars")
        for v in row:
            if type(v) is list:
                raise InvalidInput(f"input '{name}': data is nested deeper than its shape allows")
        out.extend(row)
    return out


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
            return np.asarray(values, dtype=np.float64)
        except OverflowError:
            raise InvalidInput(f"input '{name}': number out of the {datatype} range") from None
    if datatype in INT_TYPES:
        for i, v in enumerate(flat):
            if type(v) is not int:
                raise InvalidInput(
                    f"input '{name}': element {i} ({v!r}) is not an integer for datatype {datatype}"
                )
        try:
            arr = np.asarray(flat, dtype=np.int64)
        except OverflowError:
            raise InvalidInput(f"input '{name}': integer out of the INT64 range") from None
        if datatype.startswith("UINT") and len(arr) and arr.min() < 0:
            raise InvalidInput(f"input '{name}': negative value for unsigned datatype {datatype}")
        return arr
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


def is_entity_request(req: ParsedRequest, schema: InputSchema) -> bool:
    """True when the request names entity keys the model does not take directly (feature lookup)."""
    names = set(schema.names)
    return any(t.name in ENTITY_KEYS and t.name not in names for t in req.inputs)


def _column_vector(t: Tensor) -> np.ndarray:
    if len(t.shape) == 1:
        return t.array
    if t.shape[1] != 1:
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
    # A single 2-D input holding every column in order.
    if len(req.inputs) == 1 and len(cols) > 1 and req.inputs[0].name not in by_name:
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
    if params is not None and type(params) is not dict:
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
            for v in data:
                if type(v) is not int or v < _INT64_MIN or v > _INT64_MAX:
                    return None
        else:
            for v in data:
                tv = type(v)
                if tv is float:
                    if v - v != 0.0 and not allow_nan:  # NaN or +-Inf
                        return None
                elif tv is not int:
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


def entity_rows(req: ParsedRequest) -> list[dict[str, Any]]:
    """Turn the inputs of an entity request into per-row dicts (entity keys + request-time fields)."""
    n_rows: int | None = None
    vectors: dict[str, np.ndarray] = {}
    for t in req.inputs:
        vec = _column_vector(t)
        if n_rows is None:
            n_rows = len(vec)
        elif len(vec) != n_rows:
            raise InvalidInput(f"input '{t.name}': has {len(vec)} rows but other inputs have {n_rows}")
        vectors[t.name] = vec
    for key in ENTITY_KEYS:
        if key not in vectors:
            raise InvalidInput(f"input '{key}': missing (entity requests need {' and '.join(ENTITY_KEYS)})")
    lists = {k: v.tolist() for k, v in vectors.items()}
    return [{k: v[i] for k, v in lists.items()} for i in range(n_rows or 0)]


def decode(
    doc: Any,  # noqa: ANN401 - a decoded JSON document, checked here
    schema: InputSchema,
    *,
    allow_nan: bool = False,
    max_rows: int = 10_000,
) -> tuple[Frame | None, ParsedRequest | None]:
    """A decoded V2 inference document as the model's input frame.

    Returns ``(frame, None)`` for the common request (the fast path: no ``Tensor`` objects),
    ``(frame, request)`` for any other valid request, and ``(None, request)`` for a request that names
    entity keys instead of the model's inputs (the caller fetches the features, then
    :func:`frame_from_rows`). Raises the 4xx naming the input for anything invalid.
    """
    frame = fast_numeric_frame(doc, schema, allow_nan=allow_nan, max_rows=max_rows)
    if frame is not None:
        return frame, None
    req = parse_infer_document(doc, max_rows=max_rows)
    if is_entity_request(req, schema):
        return None, req
    return assemble_frame(req, schema, allow_nan=allow_nan), req
