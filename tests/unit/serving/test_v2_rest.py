"""V2 REST as the Open Inference Protocol and its clients have it: tensor signatures as one ``[N, k]``
input, flat or nested ``data``, the datatypes' ranges, requested outputs, and the binary tensor data
extension (``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data``).

Real serving app (in-process, over ASGI) against the real SQLite MLflow registry of ``registry_models``
plus a tensor-signature logistic regression registered here; answers are compared with the models'
own predictions.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import orjson
import pytest

from mlplatform.v2.codec import decode_binary, output_bytes
from tests.unit.serving.registry_models import FEATURES, FOREST, TENSOR, TENSOR_WIDTH, TYPES
from tests.unit.serving.registry_models import tensor_model as register_tensor_model

K = TENSOR_WIDTH
WIRE = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "?"}


@pytest.fixture(scope="module")
def tensor_model(serving_registry):
    """A logistic regression with a tensor signature (-1, 20) in the shared registry."""
    return register_tensor_model(serving_registry.uri)


@pytest.fixture
async def served(app_factory, tensor_model):
    return await app_factory(models=f"{FOREST},{TENSOR}")


def binary_request(doc: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }


def binary_tensor(x: np.ndarray, size_delta: int = 0) -> tuple[dict, bytes]:
    """The tensor model's request for the rows of ``x`` with their data as a binary blob: the header's
    document (its ``binary_data_size`` off by ``size_delta``) and the blob."""
    blob = x.astype("<f4").tobytes()
    size = {"binary_data_size": len(blob) + size_delta}
    return {
        "inputs": [{"name": "input-0", "shape": [len(x), K], "datatype": "FP32", "parameters": size}]
    }, blob


def read_binary_response(r: httpx.Response) -> dict[str, np.ndarray]:
    """Outputs of a binary-extension response, decoded the way the extension specifies."""
    n = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:n])
    blob, pos, out = r.content[n:], 0, {}
    for o in doc["outputs"]:
        if "data" in o:
            out[o["name"]] = np.asarray(o["data"])
            continue
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = decode_binary(blob[pos : pos + size], o["datatype"], o["shape"], o["name"])
        pos += size
    assert pos == len(blob)
    return out


async def test_a_tensor_signature_is_one_input_of_shape_n_by_k(served, tensor_model):
    model, x = tensor_model
    meta = (await served.client.get(f"/v2/models/{TENSOR}")).json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, K]}]
    rows = x[:3]
    expected = model.predict_proba(rows)[:, 1]
    for data in (rows.reshape(-1).tolist(), rows.tolist()):  # flat, and nested row-major
        body = {
            "id": "t-1",
            "inputs": [{"name": "input-0", "shape": [3, K], "datatype": "FP32", "data": data}],
        }
        r = await served.client.post(f"/v2/models/{TENSOR}/infer", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["id"], doc["model_name"], doc["model_version"]) == ("t-1", TENSOR, meta["versions"][0])
        got = {o["name"]: o for o in doc["outputs"]}
        prob = next(o for name, o in got.items() if o["datatype"] == "FP64")
        np.testing.assert_allclose(prob["data"], expected, atol=1e-5)
        assert prob["shape"] == [3]


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([{"name": "x", "shape": [1, K], "datatype": "FP32", "data": [0.0] * K}], "its input is 'input-0'"),
        (
            [{"name": "input-0", "shape": [1, K - 1], "datatype": "FP32", "data": [0.0] * (K - 1)}],
            "shape [N, 20]",
        ),
        (
            [{"name": "input-0", "shape": [1, K], "datatype": "FP32", "data": [[0.0] * (K - 1) + [[1.0]]]}],
            "nested deeper than its shape",
        ),
        (
            [{"name": "input-0", "shape": [2, K], "datatype": "FP32", "data": [[0.0] * K, [0.0] * (K - 1)]}],
            "has 19 entries at depth 1",
        ),
        (
            [
                {"name": "input-0", "shape": [1, K], "datatype": "FP32", "data": [0.0] * K},
                {"name": "input-1", "shape": [1], "datatype": "FP32", "data": [0.0]},
            ],
            "takes one input 'input-0'",
        ),
    ],
)
async def test_tensor_input_mistakes_are_422_naming_the_input(served, inputs, fragment):
    r = await served.client.post(f"/v2/models/{TENSOR}/infer", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]


@pytest.mark.parametrize(
    ("datatype", "value", "fragment"),
    [
        ("INT8", 128, "out of the INT8 range [-128, 127]"),
        ("INT16", -40000, "out of the INT16 range"),
        ("INT32", 2**31, "out of the INT32 range"),
        ("UINT8", -1, "out of the UINT8 range [0, 255]"),
        ("UINT16", 70000, "out of the UINT16 range"),
        ("UINT32", 2**32, "out of the UINT32 range"),
        ("UINT64", -1, "out of the UINT64 range [0, 18446744073709551615]"),
        ("FP16", 70000.0, "out of the FP16 range"),
        ("FP32", 1e39, "out of the FP32 range"),
        ("FP64", "seven", "is not a number for datatype FP64"),
        ("BOOL", 1, "is not true/false"),
        ("BYTES", 3, "is not a string"),
        ("FP128", 1.0, "datatype 'FP128' is not one of BOOL"),
    ],
)
async def test_every_datatype_is_checked_with_a_422_naming_the_input(
    served, serving_registry, datatype, value, fragment
):
    row = serving_registry.frame.iloc[:1]
    inputs = [{"name": c, "shape": [1], "datatype": TYPES[c], "data": row[c].tolist()} for c in FEATURES]
    inputs[0] = {"name": FEATURES[0], "shape": [1], "datatype": datatype, "data": [value]}
    r = await served.client.post(f"/v2/models/{FOREST}/infer", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"] and f"'{FEATURES[0]}'" in r.json()["error"]


async def test_binary_inputs_and_outputs_answer_like_json(served, serving_registry):
    """The same rows as JSON and as binary data (every input binary, every output binary): same answer."""
    rows = serving_registry.frame.iloc[:4]
    json_inputs = [
        {"name": c, "shape": [4], "datatype": TYPES[c], "data": rows[c].tolist()} for c in FEATURES
    ]
    plain = await served.client.post(f"/v2/models/{FOREST}/infer", json={"inputs": json_inputs})
    assert plain.status_code == 200 and "inference-header-content-length" not in plain.headers
    want = {o["name"]: np.asarray(o["data"]) for o in plain.json()["outputs"]}
    inputs, blobs = [], []
    for c in FEATURES:
        arr = np.asarray(rows[c].tolist(), dtype=WIRE[TYPES[c]])
        blobs.append(arr.tobytes())
        inputs.append(
            {"name": c, "shape": [4], "datatype": TYPES[c], "parameters": {"binary_data_size": arr.nbytes}}
        )
    body, headers = binary_request(
        {"id": "b-1", "inputs": inputs, "parameters": {"binary_data_output": True}}, blobs
    )
    r = await served.client.post(f"/v2/models/{FOREST}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    got = read_binary_response(r)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name].astype(float), want[name].astype(float))
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert header["id"] == "b-1" and header["model_name"] == FOREST
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in header["outputs"])


async def test_requested_outputs_each_as_json_or_binary(served, tensor_model):
    model, x = tensor_model
    meta = (await served.client.get(f"/v2/models/{TENSOR}")).json()
    names = [o["name"] for o in meta["outputs"]]
    assert len(names) >= 2
    doc, blob = binary_tensor(x[:2])
    doc["outputs"] = [{"name": names[1], "parameters": {"binary_data": True}}, {"name": names[0]}]
    body, headers = binary_request(doc, [blob])
    r = await served.client.post(f"/v2/models/{TENSOR}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert [o["name"] for o in header["outputs"]] == [names[1], names[0]]  # in the requested order
    assert "parameters" in header["outputs"][0] and "data" in header["outputs"][1]
    got = read_binary_response(r)
    probs = [v for v in got.values() if v.dtype.kind == "f"]
    np.testing.assert_allclose(probs[0], model.predict_proba(x[:2])[:, 1], atol=1e-5)
    bad = {**doc, "outputs": [{"name": "nope"}]}
    body, headers = binary_request(bad, [blob])
    r = await served.client.post(f"/v2/models/{TENSOR}/infer", content=body, headers=headers)
    assert r.status_code == 422 and "outputs: 'nope' is not an output" in r.json()["error"]


@pytest.mark.parametrize(
    ("header", "extra", "size_delta", "status", "fragment"),
    [
        ("abc", b"", 0, 400, "Inference-Header-Content-Length: 'abc' is not a byte count"),
        ("999999", b"", 0, 400, "longer than the"),
        (None, b"\x00" * 4, 0, 400, "4 bytes after the inputs' binary_data_size"),
        (None, b"", -4, 422, "does not match shape [2, 20] of FP32"),
        (None, b"", 4, 400, "runs past the end of the binary data"),
    ],
)
async def test_binary_framing_mistakes_are_4xx(
    served, tensor_model, header, extra, size_delta, status, fragment
):
    _, x = tensor_model
    doc, blob = binary_tensor(x[:2], size_delta)
    body, headers = binary_request(doc, [blob + extra])
    if header is not None:
        headers["inference-header-content-length"] = header
    r = await served.client.post(f"/v2/models/{TENSOR}/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_bytes_tensors_round_trip_length_prefixed():
    arr = np.array(["grocery", "", "café"], dtype=object)
    raw = output_bytes(arr, "BYTES")
    assert raw[:4] == (7).to_bytes(4, "little") and raw[4:11] == b"grocery"
    assert decode_binary(raw, "BYTES", [3], "m").tolist() == ["grocery", "", "café"]
    with pytest.raises(Exception, match="holds 3 elements but shape \\[2\\] needs 2"):
        decode_binary(raw, "BYTES", [2], "m")
    with pytest.raises(Exception, match="truncated length prefix"):
        decode_binary(raw + b"\x01", "BYTES", [3], "m")
    assert orjson.loads(orjson.dumps({"d": arr.tolist()}))["d"][2] == "café"
