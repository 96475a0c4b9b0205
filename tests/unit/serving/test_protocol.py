"""V2 request parsing and validation (mlplatform.v2.codec): every client mistake is a 4xx naming the input."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from mlplatform.core.errors import BadRequest, InvalidInput
from mlplatform.v2.codec import (
    assemble_frame,
    entity_rows,
    frame_from_rows,
    is_entity_request,
    parse_infer_request,
)
from mlplatform.v2.schema import ColumnSpec, InputSchema

SCHEMA = InputSchema(
    (
        ColumnSpec("amount", "double"),
        ColumnSpec("hour", "long"),
        ColumnSpec("is_foreign", "boolean"),
    )
)


def body(inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def named(n: int = 1, **override):
    tensors = {
        "amount": {"name": "amount", "shape": [n], "datatype": "FP64", "data": [10.5 + i for i in range(n)]},
        "hour": {"name": "hour", "shape": [n], "datatype": "INT64", "data": [i % 24 for i in range(n)]},
        "is_foreign": {
            "name": "is_foreign",
            "shape": [n],
            "datatype": "BOOL",
            "data": [i % 2 == 0 for i in range(n)],
        },
    }
    for k, v in override.items():
        if v is None:
            tensors.pop(k)
        else:
            tensors[k] = v
    return list(tensors.values())


def frame_of(inputs, **kw):
    return assemble_frame(parse_infer_request(body(inputs)), SCHEMA, **kw)


def test_named_inputs_become_rows_in_signature_order():
    inputs = named(3)
    inputs.reverse()  # order of inputs in the request does not matter
    f = frame_of(inputs)
    assert f.n_rows == 3
    np.testing.assert_array_equal(f.matrix, [[10.5, 0, 1], [11.5, 1, 0], [12.5, 2, 1]])


def test_column_shape_n_by_1_and_nested_data():
    inputs = named(2, amount={"name": "amount", "shape": [2, 1], "datatype": "FP32", "data": [[1.0], [2.0]]})
    f = frame_of(inputs)
    np.testing.assert_array_equal(f.matrix[:, 0], [1.0, 2.0])


def test_single_2d_input_in_signature_order():
    data = [[1.5, 3, 1], [2.5, 4, 0]]
    f = frame_of([{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": data}])
    np.testing.assert_array_equal(f.matrix, [[1.5, 3, 1], [2.5, 4, 0]])
    flat = frame_of([{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1.5, 3, 1, 2.5, 4, 0]}])
    np.testing.assert_array_equal(flat.matrix, f.matrix)


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        (named(amount=None), "input 'amount': missing"),
        (
            named(extra={"name": "extra", "shape": [1], "datatype": "FP64", "data": [1.0]}),
            "input 'extra': not an input",
        ),
        (
            named(hour={"name": "hour", "shape": [1], "datatype": "FP64", "data": [1.5]}),
            "input 'hour': datatype FP64",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "BYTES", "data": ["x"]}),
            "input 'amount': datatype BYTES",
        ),
        (
            named(amount={"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0]}),
            "input 'amount': data has 1 elements but shape [2] needs 2",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "FP64", "data": ["NaN"]}),
            "input 'amount': NaN or Inf",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "FP64", "data": ["-Infinity"]}),
            "input 'amount': NaN or Inf",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "FP64", "data": ["12"]}),
            "input 'amount': element 0 ('12') is not a number",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "FP64", "data": [None]}),
            "input 'amount': element 0 (None)",
        ),
        (
            named(hour={"name": "hour", "shape": [1], "datatype": "INT64", "data": [1.5]}),
            "input 'hour': element 0 (1.5) is not an integer",
        ),
        (
            named(is_foreign={"name": "is_foreign", "shape": [1], "datatype": "BOOL", "data": [1]}),
            "input 'is_foreign': element 0 (1) is not true/false",
        ),
        (
            named(is_foreign={"name": "is_foreign", "shape": [1], "datatype": "INT64", "data": [2]}),
            "input 'is_foreign': boolean column",
        ),
        (
            named(amount={"name": "amount", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}),
            "input 'amount': shape [1, 2] is not a column",
        ),
        (
            named(amount={"name": "amount", "shape": [1, 1, 1], "datatype": "FP64", "data": [1.0]}),
            "input 'amount': shape [1, 1, 1] is not a column",
        ),
        (
            named(amount={"name": "amount", "shape": [-1], "datatype": "FP64", "data": [1.0]}),
            "input 'amount': shape must be",
        ),
        (
            named(amount={"name": "amount", "shape": [1], "datatype": "FP99", "data": [1.0]}),
            "input 'amount': datatype 'FP99'",
        ),
        (
            named(amount={"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}),
            "input 'hour': has 1 rows but other inputs have 2",
        ),
        (
            [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}],
            "input 'x': a single input must have shape [N, 3]",
        ),
        (
            named(amount={"name": "amount", "shape": [2], "datatype": "FP64", "data": [[1.0], 2.0]}),
            "input 'amount': data is nested deeper than its shape [2] allows",
        ),
        ([*named(), named()[0]], "input 'amount': given more than once"),
        ([], "inputs: must be a non-empty list"),
        (
            [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.5, 1]}],
            "input 'x': column 1 (hour) needs whole",
        ),
        (
            [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2, 3]}],
            "column 2 (is_foreign) is boolean",
        ),
        (
            [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["NaN", 2, 1]}],
            "input 'x' column 0 (amount): NaN",
        ),
    ],
)
def test_bad_inputs_name_the_input(inputs, fragment):
    with pytest.raises(InvalidInput) as err:
        frame_of(inputs)
    assert fragment in err.value.message
    assert err.value.status_code == 422


def test_nan_allowed_when_configured():
    f = frame_of(
        named(amount={"name": "amount", "shape": [1], "datatype": "FP64", "data": ["NaN"]}), allow_nan=True
    )
    assert np.isnan(f.matrix[0, 0])


def test_malformed_json_is_400_and_non_object_is_422():
    with pytest.raises(BadRequest):
        parse_infer_request(b'{"inputs": [')
    with pytest.raises(InvalidInput):
        parse_infer_request(b"[1, 2]")
    with pytest.raises(InvalidInput, match="id: must be a string"):
        parse_infer_request(body(named(), id=5))
    with pytest.raises(InvalidInput, match="outputs\\[0\\].name"):
        parse_infer_request(body(named(), outputs=[{"nom": "x"}]))


def test_out_of_range_numbers_from_a_decoded_document():
    """Callers that decode JSON themselves (Python's json keeps big ints) still get a 422."""
    from mlplatform.v2.codec import parse_infer_document

    for datatype, fragment in (
        ("FP64", "number out of the FP64 range"),
        ("INT64", "is out of the INT64 range"),
    ):
        doc = {"inputs": [{"name": "amount", "shape": [1], "datatype": datatype, "data": [10**400]}]}
        with pytest.raises(InvalidInput, match=fragment):
            parse_infer_document(doc)


def test_row_limit():
    with pytest.raises(InvalidInput, match="exceeds the limit of 2 per request"):
        parse_infer_request(body(named(3)), max_rows=2)


def test_entity_request_rows_and_join():
    req = parse_infer_request(
        body(
            [
                {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [7, 8]},
                {"name": "merchant_id", "shape": [2], "datatype": "BYTES", "data": ["m1", "m2"]},
                {"name": "amount", "shape": [2], "datatype": "FP64", "data": [5.0, 6.0]},
            ]
        )
    )
    keys = ("user_id", "merchant_id")
    assert is_entity_request(req, SCHEMA, keys)
    assert not is_entity_request(req, SCHEMA, ("card_id",))  # the keys are the model's, not the protocol's
    assert not is_entity_request(req, SCHEMA, ())
    rows = entity_rows(req, keys)
    assert rows == [
        {"user_id": 7, "merchant_id": "m1", "amount": 5.0},
        {"user_id": 8, "merchant_id": "m2", "amount": 6.0},
    ]
    joined = [{**r, "hour": 3, "is_foreign": True} for r in rows]
    f = frame_from_rows(joined, SCHEMA)
    np.testing.assert_array_equal(f.matrix, [[5.0, 3, 1], [6.0, 3, 1]])
    with pytest.raises(InvalidInput, match="input 'hour': no value for row 0"):
        frame_from_rows(rows, SCHEMA)
    assert not is_entity_request(parse_infer_request(body(named())), SCHEMA, keys)
    with pytest.raises(InvalidInput, match="input 'card_id': missing"):
        entity_rows(req, ("card_id",))


def test_native_frames_of_read_only_matrices_can_be_edited_in_place() -> None:
    """gRPC raw contents decode to read-only views of the request; the pandas frame a native model gets
    must still take in-place edits (``fillna(inplace=True)``, ``df[c] *= 2``), as over REST."""
    from mlplatform.serving.runtimes import _dataframe
    from mlplatform.v2.codec import Frame

    matrix = np.frombuffer(np.array([1.0, np.nan, 3.0, 4.0]).tobytes(), dtype=np.float64).reshape(2, 2)
    assert not matrix.flags.writeable
    schema = InputSchema((ColumnSpec("a", "double"), ColumnSpec("b", "double")))
    df = _dataframe(Frame(matrix=matrix, columns={}, n_rows=2), schema)
    df.fillna(0.0, inplace=True)
    df["a"] *= 2
    assert df.to_numpy().tolist() == [[2.0, 0.0], [6.0, 4.0]]
