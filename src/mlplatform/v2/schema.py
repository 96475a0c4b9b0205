"""A model's input schema as V2 sees it: the ordered input columns read from its MLflow signature, and
the V2 datatypes a client may send for each."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.v2.types import FLOAT_TYPES, INT_TYPES, SIGNED_INT_TYPES

_TENSOR_DATATYPE = {
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}


class UnsupportedModel(Exception):
    """The model's signature cannot be served or explained (no signature, unsupported types)."""


# MLflow column types -> the V2 datatypes a client may send for them.
COLUMN_ACCEPTS: dict[str, frozenset[str]] = {
    "double": FLOAT_TYPES | INT_TYPES,
    "float": FLOAT_TYPES | INT_TYPES,
    "long": INT_TYPES,
    "integer": INT_TYPES,
    "boolean": frozenset({"BOOL"}) | INT_TYPES,
    "string": frozenset({"BYTES"}),
}
COLUMN_DATATYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One model input column (from the MLflow signature)."""

    name: str
    type: str  # double | float | long | integer | boolean | string


@dataclass(frozen=True)
class TensorInput:
    """The one input of a model with a tensor signature, as V2 clients send it."""

    name: str
    datatype: str  # a V2 datatype
    shape: tuple[int, ...]  # -1 for the batch dimension


@dataclass(frozen=True)
class InputSchema:
    """The ordered input columns of a model; ``tensor`` set for a tensor signature, whose one
    ``[N, k]`` input feeds the columns ``f0..f{k-1}``."""

    columns: tuple[ColumnSpec, ...]
    tensor: TensorInput | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> bool:
        return all(c.type != "string" for c in self.columns)

    def index(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @functools.cached_property
    def fast_plan(self) -> dict[str, tuple[int, frozenset[str], str]] | None:
        """Per column name: (position, datatypes the fast path takes, value kind); None with a string column.

        Value kinds: ``real`` (double/float columns: finite numbers), ``int`` (long/integer columns:
        int64 integers), ``bool`` (boolean columns: true/false, or 0/1 in an integer tensor).
        """
        plan: dict[str, tuple[int, frozenset[str], str]] = {}
        for j, c in enumerate(self.columns):
            if c.type in ("double", "float"):
                plan[c.name] = (j, FLOAT_TYPES | SIGNED_INT_TYPES, "real")
            elif c.type in ("long", "integer"):
                plan[c.name] = (j, SIGNED_INT_TYPES, "int")
            elif c.type == "boolean":
                plan[c.name] = (j, SIGNED_INT_TYPES | {"BOOL"}, "bool")
            else:
                return None
        return plan


def schema_from_signature(signature: Any) -> InputSchema:
    """Input columns (in order) from an MLflow signature; a tensor signature becomes f0..fN-1."""
    if signature is None or signature.inputs is None:
        raise UnsupportedModel("model was logged without a signature; serving needs one")
    inputs = signature.inputs
    if inputs.is_tensor_spec():
        specs = inputs.inputs
        shape = specs[0].shape if len(specs) == 1 else None
        if shape is None or len(shape) != 2 or shape[1] in (-1, None):
            raise UnsupportedModel("tensor signatures must be one 2-D input with a fixed column count")
        kind = np.dtype(specs[0].type).kind
        col_type = "double" if kind == "f" else "long" if kind in "iu" else "boolean" if kind == "b" else ""
        if not col_type:
            raise UnsupportedModel(f"unsupported tensor dtype {specs[0].type}")
        datatype = _TENSOR_DATATYPE.get(np.dtype(specs[0].type).name, COLUMN_DATATYPE[col_type])
        tensor = TensorInput(specs[0].name or "input-0", datatype, (-1, int(shape[1])))
        return InputSchema(tuple(ColumnSpec(f"f{j}", col_type) for j in range(shape[1])), tensor)
    cols = []
    for spec in inputs.inputs:
        type_name = getattr(spec.type, "name", str(spec.type))
        if type_name not in COLUMN_DATATYPE:
            raise UnsupportedModel(f"column '{spec.name}' has type {type_name}, which serving cannot feed")
        cols.append(ColumnSpec(spec.name, type_name))
    return InputSchema(tuple(cols))
