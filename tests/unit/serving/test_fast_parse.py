"""``fast_numeric_frame`` against the general parser (``parse_infer_document`` + ``assemble_frame``).

The contract (see :func:`mlplatform.v2.codec.fast_numeric_frame`): for every decoded document
the fast path either returns ``None`` or exactly the frame the general path builds (same float64
matrix, shape and row count), so the general path never rejects a document the fast path accepted.
Neither path may raise anything but a 4xx (``InvalidInput``/``BadRequest``) on client input.

Documents start as a well-formed request for a random numeric schema (shuffled input order, ``[n]`` or
``[n, 1]`` shapes, every datatype the columns take, awkward but valid numbers), then get a few random
mutations: odd values (bools, strings, NaN-like strings, None, nested lists, 2**70, 10**400, NaN),
wrong datatypes (UINT8, BOOL, BYTES, FP32, ...), bad shapes, nested data, missing/extra/duplicate/
unhashable names, ``outputs``, bad ``id``/``parameters``, a 2-D input, entity keys, row mismatches.
Each property runs twice over the same generator: a hypothesis test (shrinks a failure to a small
document) and a seeded sweep of many more cases (cheap per case; a failure names its seed).
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlplatform.core.errors import BadRequest, InvalidInput
from mlplatform.v2.codec import Frame, assemble_frame, fast_numeric_frame, load_json, parse_infer_document
from mlplatform.v2.schema import ColumnSpec, InputSchema

T = TypeVar("T")

NAMES = ("amount", "merchant_risk", "hour", "tx_count_24h", "age", "score")
NUMERIC_TYPES = ("double", "float", "long", "integer")
FLOAT_DATATYPES = ("FP16", "FP32", "FP64")
SIGNED_DATATYPES = ("INT8", "INT16", "INT32", "INT64")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SWEEP_CASES = 20_000

SETTINGS = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values a client can put in ``data`` (after JSON decoding), the awkward ones included.
ODD_VALUES = (
    True,
    False,
    None,
    "nan",
    "NaN",
    " inf",
    "-Infinity",
    "1.5",
    "",
    [1.0],
    [[1]],
    [],
    {"v": 1},
    2**63,
    -(2**63) - 1,
    -1,
    2**70,
    10**400,
    -(10**400),
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -0.0,
    5e-324,
    1.5,
    2.0,
)
BAD_DATATYPES = (
    "UINT8",
    "UINT64",
    "BOOL",
    "BYTES",
    "FP32",
    "FP64",
    "INT64",
    "FLOAT",
    "fp64",
    None,
    64,
    ["FP64"],
)


# ---------------------------------------------------------------------------------------------
# the contract
# ---------------------------------------------------------------------------------------------


class Rejected:
    """The general path answered 4xx."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"Rejected({self.status}, {self.message!r})"


def general(doc: Any, schema: InputSchema, *, allow_nan: bool, max_rows: int) -> Frame | Rejected:
    """The general path; a 4xx is returned, anything else (TypeError, IndexError, ...) propagates."""
    try:
        return assemble_frame(parse_infer_document(doc, max_rows=max_rows), schema, allow_nan=allow_nan)
    except (InvalidInput, BadRequest) as exc:
        return Rejected(exc.status_code, exc.message)


def check_contract(
    doc: Any, schema: InputSchema, *, allow_nan: bool, max_rows: int
) -> tuple[Frame | None, Frame | Rejected]:
    """Assert the fast/general contract for one document; returns both paths' answers."""
    fast = fast_numeric_frame(doc, schema, allow_nan=allow_nan, max_rows=max_rows)
    slow = general(doc, schema, allow_nan=allow_nan, max_rows=max_rows)
    if fast is None:
        return None, slow
    assert isinstance(slow, Frame), f"fast path accepted a document the general path rejects: {slow}"
    assert slow.matrix is not None and fast.matrix is not None
    assert fast.columns == {} and slow.columns == {}
    assert fast.n_rows == slow.n_rows
    assert fast.matrix.dtype == np.float64 and slow.matrix.dtype == np.float64
    assert fast.matrix.shape == slow.matrix.shape == (slow.n_rows, len(schema.columns))
    # the same values (NaN where the general path has NaN, when NaN is allowed), signs of zeros included
    assert np.array_equal(fast.matrix, slow.matrix, equal_nan=True), (fast.matrix, slow.matrix)
    assert np.array_equal(np.signbit(fast.matrix), np.signbit(slow.matrix))
    return fast, slow


# ---------------------------------------------------------------------------------------------
# generator, driven either by hypothesis or by a seeded random.Random
# ---------------------------------------------------------------------------------------------


class DrawPicker:
    """Choices from hypothesis (so failures shrink)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def choice(self, seq: Sequence[T]) -> T:
        return self.draw(st.sampled_from(seq))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def real(self, allow_nonfinite: bool) -> float:
        return self.draw(st.floats(allow_nan=allow_nonfinite, allow_infinity=allow_nonfinite))

    def permutation(self, seq: list[T]) -> list[T]:
        return list(self.draw(st.permutations(seq)))


class RandomPicker:
    """Choices from a seeded ``random.Random`` (cheap: many thousands of cases per second)."""

    SPECIAL = (0.0, -0.0, 1.0, -1.5, 0.1, 1e-300, 5e-324, 1.7976931348623157e308, 2.0**53 + 1, 65504.0)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        r = self.rng.random()
        if r < 0.15:
            return self.rng.choice((lo, hi))
        if r < 0.6 and lo <= 0 <= hi:
            return self.rng.randint(max(lo, -100), min(hi, 100))
        return self.rng.randint(lo, hi)

    def real(self, allow_nonfinite: bool) -> float:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(self.SPECIAL) * self.rng.choice((1, -1))
        if r < 0.7:
            return self.rng.uniform(-1e4, 1e4)
        v = struct.unpack("<d", self.rng.getrandbits(64).to_bytes(8, "little"))[0]  # any double
        if not allow_nonfinite and not math.isfinite(v):
            return 0.5
        return v

    def permutation(self, seq: list[T]) -> list[T]:
        out = list(seq)
        self.rng.shuffle(out)
        return out


Picker = DrawPicker | RandomPicker


def make_schema(p: Picker, numeric_only: bool = False) -> InputSchema:
    names = p.permutation(list(NAMES))[: p.integer(1, 5)]
    if numeric_only:
        return InputSchema(tuple(ColumnSpec(n, p.choice((*NUMERIC_TYPES, "boolean"))) for n in names))
    # mostly numbers and booleans (what the fast path is for); sometimes a string column (no fast plan)
    types = NUMERIC_TYPES * 6 + ("boolean", "boolean", "string")
    return InputSchema(tuple(ColumnSpec(n, p.choice(types)) for n in names))


INT_RANGE = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (INT64_MIN, INT64_MAX),
}
FLOAT_LIMIT = {"FP16": 65504.0, "FP32": 3.4028234663852886e38}


def clean_value(p: Picker, datatype: str, allow_nonfinite: bool) -> Any:
    """A value the datatype holds (its integer range, its finite float range)."""
    if datatype in SIGNED_DATATYPES:
        lo, hi = INT_RANGE[datatype]
        kind = p.choice(("small", "full", "edge"))
        if kind == "small":
            return p.integer(max(lo, -100), min(hi, 100))
        if kind == "full":
            return p.integer(lo, hi)
        return p.choice((lo, hi, max(lo, -(2**53) - 1), min(hi, 2**53 + 1)))
    if datatype in FLOAT_DATATYPES:
        limit = FLOAT_LIMIT.get(datatype)
        kind = p.choice(("real", "real", "small", "int64", "big"))
        if kind == "real":
            v = p.real(allow_nonfinite)
            return v if limit is None or not math.isfinite(v) or abs(v) <= limit else 0.5
        if kind == "small":
            return p.integer(-1000, 1000)
        if limit is not None:
            return p.integer(-int(limit), int(limit))
        if kind == "int64":
            return p.integer(INT64_MIN, INT64_MAX)
        return p.choice((2**70, -(2**80), 2**53 + 1, 10**300))  # ints past int64: fine in a float tensor
    if datatype == "BOOL":
        return p.choice((True, False))
    return p.choice(("a", "", "x y"))


def clean_column_value(p: Picker, col_type: str, datatype: str, allow_nonfinite: bool) -> Any:
    if col_type == "boolean" and datatype != "BOOL":
        return p.choice((0, 1))  # integer tensors feed boolean columns with 0/1
    return clean_value(p, datatype, allow_nonfinite)


def datatypes_for(col_type: str) -> tuple[str, ...]:
    if col_type in ("double", "float"):
        return FLOAT_DATATYPES + SIGNED_DATATYPES
    if col_type in ("long", "integer"):
        return SIGNED_DATATYPES
    return ("BOOL", "BOOL", *SIGNED_DATATYPES) if col_type == "boolean" else ("BYTES",)


def clean_document(p: Picker, schema: InputSchema, allow_nonfinite: bool) -> dict[str, Any]:
    """A well-formed request: one input per column, shuffled, [n] or [n, 1] shapes, flat data."""
    n = p.choice((1, 1, 2, 3, 5))
    inputs = []
    for c in schema.columns:
        datatype = p.choice(datatypes_for(c.type))
        data = [clean_column_value(p, c.type, datatype, allow_nonfinite) for _ in range(n)]
        inputs.append({"name": c.name, "shape": p.choice(([n], [n, 1])), "datatype": datatype, "data": data})
    doc: dict[str, Any] = {"inputs": p.permutation(inputs)}
    if p.choice((True, False)):
        doc["id"] = p.choice(("req-1", "", "x" * 40))
    if p.choice((True, False)):
        doc["parameters"] = p.choice(({}, {"content_type": "np"}, None))
    return doc


# weighted: the kinds that make the fast and general paths disagree most easily come up more often
MUTATIONS = (
    *("odd_value",) * 4,
    *("datatype",) * 2,
    *("retype",) * 2,
    *("shape",) * 2,
    *("rows",) * 2,
    *("outputs",) * 2,
    "nest",
    "drop_input",
    "extra_input",
    "duplicate_input",
    "rename",
    "drop_key",
    "empty_data",
    "id",
    "parameters",
    "inputs",
    "doc",
    "matrix",
    "entity",
)


def mutate(p: Picker, doc: dict[str, Any], schema: InputSchema, kinds: Counter[str]) -> Any:
    kind = p.choice(MUTATIONS)
    kinds[kind] += 1
    inputs = doc["inputs"]
    i = p.integer(0, len(inputs) - 1)
    t = inputs[i]
    data = t.get("data")
    n = len(data) if type(data) is list else 1
    if kind == "odd_value" and type(data) is list and data:
        data[p.integer(0, len(data) - 1)] = p.choice(ODD_VALUES)
    elif kind == "datatype":
        t["datatype"] = p.choice(BAD_DATATYPES)
    elif kind == "retype":
        # a datatype some numeric column takes, but not necessarily this column or this data
        t["datatype"] = p.choice(FLOAT_DATATYPES + SIGNED_DATATYPES + ("UINT32",))
    elif kind == "shape":
        t["shape"] = p.choice(
            (
                [],
                [n + 1],
                [max(n - 1, 0)],
                [n, 2],
                [n, 1, 1],
                [n, 0],
                [1, n],
                [str(n)],
                [True],
                [-1],
                [n, True],
                [float(n)],
                [n, -1],
                n,
                None,
                [[n]],
                "n",
            )
        )
    elif kind == "nest" and type(data) is list:
        t["data"] = [[v] for v in data]
        t["shape"] = p.choice(([n, 1], [n]))
    elif kind == "drop_input":
        inputs.pop(i)
    elif kind == "extra_input":
        inputs.append({"name": "zip", "shape": [n], "datatype": "FP64", "data": [1.0] * n})
    elif kind == "duplicate_input":
        inputs.append(dict(t, data=list(data) if type(data) is list else data))
        if len(inputs) > 2 and p.choice((True, False)):
            inputs.pop(0 if i != 0 else 1)  # as many inputs as columns, one name missing
    elif kind == "rename":
        t["name"] = p.choice(("", "zip", "user_id", None, 3, ["amount"], {"n": 1}, "AMOUNT"))
    elif kind == "drop_key":
        t.pop(p.choice(("name", "shape", "datatype", "data")), None)
    elif kind == "empty_data":
        t["data"] = []
        t["shape"] = p.choice(([0], [n]))
    elif kind == "outputs":
        doc["outputs"] = p.choice(([{"name": "label"}], [], None, "label", [{"name": 1}], [None]))
    elif kind == "id":
        doc["id"] = p.choice((5, None, [], {"a": 1}, "", "req-1", True, 1.5))
    elif kind == "parameters":
        doc["parameters"] = p.choice(([], "x", None, {}, 0, {"a": [1]}))
    elif kind == "inputs":
        doc["inputs"] = p.choice(([], None, "x", {"name": "amount"}, [1], [None], [[]]))
    elif kind == "doc":
        return p.choice(([], None, "inputs", 1, [doc]))
    elif kind == "matrix":  # one 2-D input holding every column (general path only)
        rows = p.integer(1, 3)
        k = len(schema.columns) + p.choice((0, 0, 1, -1))
        dtype = p.choice(("FP64", "INT64"))
        doc["inputs"] = [{"name": "input-0", "shape": [rows, k], "datatype": dtype, "data": [[1] * k] * rows}]
    elif kind == "entity":
        inputs.append({"name": "user_id", "shape": [n], "datatype": "INT64", "data": [1] * n})
    elif kind == "rows" and type(data) is list and data:
        # one input with another row count (its shape kept consistent with its data)
        t["data"] = data + data[:1]
        shape = t.get("shape")
        t["shape"] = [len(t["data"]), *(shape[1:] if type(shape) is list else [])]
    return doc


def make_case(p: Picker, kinds: Counter[str] | None = None) -> tuple[Any, InputSchema, bool, int]:
    kinds = Counter() if kinds is None else kinds
    schema = make_schema(p)
    allow_nan = p.choice((True, False))
    max_rows = p.choice((10_000, 10_000, 3, 2, 1))
    doc: Any = clean_document(p, schema, allow_nonfinite=True)
    for _ in range(p.choice((0, 1, 1, 1, 2, 3))):
        if type(doc) is not dict or type(doc.get("inputs")) is not list or not doc["inputs"]:
            break
        if any(type(t) is not dict for t in doc["inputs"]):
            break
        doc = mutate(p, doc, schema, kinds)
    return doc, schema, allow_nan, max_rows


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

_TWO = InputSchema((ColumnSpec("a", "double"), ColumnSpec("b", "long")))


def _doc(a: dict[str, Any] | None = None, b: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.5], **(a or {})},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [2], **(b or {})},
        ]
    }


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, InputSchema, bool, int]:
    return make_case(DrawPicker(draw))


@SETTINGS
@given(cases())
# regressions: unhashable or missing fields are a decline (None) / a 422, never a TypeError/IndexError
@example((_doc(a={"name": ["a"]}), _TWO, False, 10_000))
@example((_doc(a={"name": {"a": 1}}), _TWO, False, 10_000))
@example((_doc(a={"shape": []}), _TWO, False, 10_000))
@example((_doc(a={"datatype": ["FP64"]}), _TWO, False, 10_000))
@example((_doc(b={"datatype": {"t": 1}}), _TWO, False, 10_000))
@example((_doc(a={"data": [10**400]}), _TWO, False, 10_000))
@example((_doc(b={"data": [2**63]}), _TWO, False, 10_000))
@example((_doc(a={"data": [math.nan]}), _TWO, False, 10_000))
@example((_doc(a={"data": [math.nan]}), _TWO, True, 10_000))
@example((_doc(a={"datatype": "UINT8", "data": [-1]}), _TWO, False, 10_000))
def test_fast_path_agrees_with_the_general_path(case: tuple[Any, InputSchema, bool, int]) -> None:
    """Fast returns None or the general path's frame (so whenever the general path answers 4xx, fast
    returned None); neither raises anything but InvalidInput/BadRequest."""
    doc, schema, allow_nan, max_rows = case
    check_contract(doc, schema, allow_nan=allow_nan, max_rows=max_rows)


def test_fast_path_agrees_with_the_general_path_seeded_sweep() -> None:
    """The same property over many more seeded cases; also checks the generator hit every branch."""
    kinds: Counter[str] = Counter()
    outcomes: Counter[tuple[bool, bool]] = Counter()
    for seed in range(SWEEP_CASES):
        doc, schema, allow_nan, max_rows = make_case(RandomPicker(seed), kinds)
        try:
            fast, slow = check_contract(doc, schema, allow_nan=allow_nan, max_rows=max_rows)
        except Exception as exc:
            detail = f"seed {seed}: {schema} allow_nan={allow_nan} max_rows={max_rows}\ndoc={doc!r}"
            raise AssertionError(detail) from exc
        outcomes[(fast is not None, isinstance(slow, Frame))] += 1
    assert set(kinds) == set(MUTATIONS), kinds
    assert min(kinds.values()) >= 100, kinds
    # fast accepts a good share; the general path both accepts what fast declines and rejects plenty
    assert outcomes[(True, True)] > SWEEP_CASES // 10, outcomes
    assert outcomes[(False, True)] > SWEEP_CASES // 20, outcomes
    assert outcomes[(False, False)] > SWEEP_CASES // 5, outcomes
    assert outcomes[(True, False)] == 0


def _clean_numeric(p: Picker) -> tuple[InputSchema, dict[str, Any]]:
    schema = make_schema(p, numeric_only=True)
    return schema, clean_document(p, schema, allow_nonfinite=False)


@settings(SETTINGS, max_examples=100)
@given(st.data())
def test_fast_path_takes_every_clean_numeric_request(data: st.DataObject) -> None:
    """Coverage of the accept branch: finite, in-range, one input per column -> a frame, equal to general."""
    schema, doc = _clean_numeric(DrawPicker(data.draw))
    assert check_contract(doc, schema, allow_nan=False, max_rows=10_000)[0] is not None, doc


def test_fast_path_takes_every_clean_numeric_request_seeded_sweep() -> None:
    for seed in range(2_000):
        schema, doc = _clean_numeric(RandomPicker(seed))
        assert check_contract(doc, schema, allow_nan=False, max_rows=10_000)[0] is not None, (seed, doc)


def test_string_column_has_no_plan_and_fast_declines() -> None:
    for col_type, datatype, value in (("string", "BYTES", "x"),):
        schema = InputSchema((ColumnSpec("a", "double"), ColumnSpec("flag", col_type)))
        assert schema.fast_plan is None
        doc = {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "flag", "shape": [1], "datatype": datatype, "data": [value]},
            ]
        }
        assert fast_numeric_frame(doc, schema) is None
        assert isinstance(general(doc, schema, allow_nan=False, max_rows=10), Frame)


def test_boolean_columns_take_the_fast_path() -> None:
    """true/false in a BOOL tensor or 0/1 in an integer tensor feed a boolean column; 2 does not."""
    schema = InputSchema((ColumnSpec("a", "double"), ColumnSpec("flag", "boolean")))
    assert schema.fast_plan is not None
    for datatype, values in (("BOOL", [True, False]), ("INT64", [1, 0])):
        doc = {
            "inputs": [
                {"name": "flag", "shape": [2], "datatype": datatype, "data": values},
                {"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [0.5, 2.0]},
            ]
        }
        fast, _ = check_contract(doc, schema, allow_nan=False, max_rows=10)
        assert fast is not None and fast.matrix.tolist() == [[0.5, 1.0], [2.0, 0.0]]
    bad = {
        "inputs": [
            {"name": "flag", "shape": [1], "datatype": "INT64", "data": [2]},
            {"name": "a", "shape": [1], "datatype": "FP64", "data": [0.5]},
        ]
    }
    assert fast_numeric_frame(bad, schema) is None
    rejected = general(bad, schema, allow_nan=False, max_rows=10)
    assert isinstance(rejected, Rejected) and "boolean column" in rejected.message


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (
            b'{"inputs":[{"name":"b","shape":[2],"datatype":"INT32","data":[3,4]},'
            b'{"name":"a","shape":[2,1],"datatype":"FP32","data":[0.5,-1]}],"id":"r"}',
            2,
        ),
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"INT64","data":[9007199254740993]},'
            b'{"name":"b","shape":[1],"datatype":"INT64","data":[-9223372036854775808]}],"parameters":{}}',
            1,
        ),
    ],
)
def test_decoded_json_bodies_take_the_fast_path(body: bytes, rows: int) -> None:
    """Real wire bodies (orjson-decoded, as the data plane does) are accepted and match the general path."""
    doc = load_json(body)
    fast, _ = check_contract(doc, _TWO, allow_nan=False, max_rows=10_000)
    assert fast is not None and fast.n_rows == rows
    assert orjson.dumps(fast.matrix.tolist())
