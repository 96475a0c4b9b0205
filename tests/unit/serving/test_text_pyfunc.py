"""A pyfunc model with a string input, logged and registered with real MLflow, served by the real app:
V2 infer with BYTES in and out, generate as one chunk, bad text as a 422 naming the input."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from tests.helpers import in_process, wait_until
from tests.unit.serving.support import registry_run, text_settings


class Shout(mlflow.pyfunc.PythonModel):
    """Upper-cases its ``text`` column and adds an exclamation mark."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return [t.upper() + "!" for t in model_input["text"]]


@pytest.fixture(scope="module")
async def served(tmp_path_factory):  # noqa: ANN001, ANN201
    from mlflow.models import infer_signature

    tmp = tmp_path_factory.mktemp("text-pyfunc")
    with registry_run(tmp, "pyfunc-text") as (uri, client):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Shout(),
            signature=infer_signature(pd.DataFrame({"text": ["hi"]}), ["HI!"]),
            registered_model_name="shout",
        )
    client.set_registered_model_alias("shout", "champion", "1")
    settings = text_settings(tmp, uri, "shout", runtime="native")
    app = create_app(settings, secrets=EnvSecretsBackend({}))
    async with in_process(app, "http://t") as client_:
        await wait_until(app.state.repository.ready, 120)
        yield client_


async def test_pyfunc_string_model_over_v2_and_generate(served) -> None:  # noqa: ANN001
    client = served
    meta = (await client.get("/v2/models/shout")).json()
    assert meta["platform"] == "pyfunc"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["ab", "héllo"]}]}
    r = await client.post("/v2/models/shout/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0] == {
        "name": "text_output",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["AB!", "HÉLLO!"],
    }
    r = await client.post("/v2/models/shout/generate", json={"text_input": "quiet"})
    assert r.status_code == 200 and r.json()["text_output"] == "QUIET!"
    r = await client.post("/v2/models/shout/generate_stream", json={"text_input": "quiet"})
    assert r.status_code == 200 and '"text_output":"QUIET!"' in r.text
    body["inputs"][0]["data"] = ["ok", " "]
    r = await client.post("/v2/models/shout/infer", json=body)
    assert r.status_code == 422 and "input 'text' element 1: is empty" in r.json()["error"]
    r = await client.post("/v2/models/shout/generate", json={"text_input": ""})
    assert r.status_code == 422 and "is empty" in r.json()["error"]
