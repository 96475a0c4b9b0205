"""Text models as :class:`~mlplatform.serving.runtimes.LoadedModel`: MLflow ``transformers`` generation
pipelines (served by torch through :class:`~.scheduler.GenerationScheduler`) and pyfunc models with
string inputs (served by their ``predict``).

Both take the input ``text_input`` (BYTES, shape ``[N]`` or ``[N, 1]``) and answer ``text_output``
(BYTES), so V2 infer reaches them through the data plane like any model; only generation models
serve the generate extension. Settings (env prefix ``SERVING_TEXT_``) are :class:`TextSettings`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.core.errors import InvalidInput
from mlplatform.serving.text.scheduler import GenerationScheduler, GenParams
from mlplatform.text.limits import context_length, default_max_tokens
from mlplatform.v2.codec import Frame
from mlplatform.v2.schema import ColumnSpec, InputSchema, UnsupportedModel
from mlplatform.v2.types import MetadataTensor

log = logging.getLogger("mlplatform.serving.text")

TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
#: the column :meth:`TextGenerationRuntime.check_frame` adds: each row's token ids, so ``predict`` does not
#: tokenize again (batched frames concatenate it with the texts)
TOKEN_IDS = "text_input:token_ids"
#: pipeline tasks served by the generation scheduler
GENERATION_TASKS = frozenset({"text2text-generation", "summarization", "translation", "text-generation"})
#: context length of a model whose tokenizer and config give none
FALLBACK_CONTEXT_LENGTH = 512


class TextSettings(BaseSettings):
    """Text-model serving settings (env prefix ``SERVING_TEXT_``)."""

    model_config = SettingsConfigDict(env_prefix="SERVING_TEXT_", extra="ignore")

    max_batch_size: int = Field(8, ge=1, le=256, description="Most generation requests decoded as one batch.")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="After the first waiting request, how long to wait for more to batch."
    )
    batching: bool = Field(True, description="Batch concurrent generation requests (off: one at a time).")
    max_tokens_limit: int = Field(
        512, ge=1, le=32768, description="Largest max_tokens a generation request may ask for."
    )
    threads: int = Field(0, ge=0, description="torch intra-op threads on CPU (0: torch's default).")


def is_text_model(folder: Path) -> bool:
    """True for an MLflow model folder served as a text model (transformers flavour, or a pyfunc
    model without a native tabular flavour whose signature inputs are all strings)."""
    from mlflow.models import Model

    mlmodel = Model.load(str(Path(folder) / "MLmodel"))
    flavors = mlmodel.flavors
    if "transformers" in flavors:
        return True
    if "sklearn" in flavors or "pytorch" in flavors or "python_function" not in flavors:
        return False
    sig = mlmodel.signature
    if sig is None or sig.inputs is None or sig.inputs.is_tensor_spec():
        return False
    types = [getattr(s.type, "name", str(s.type)) for s in sig.inputs.inputs]
    return bool(types) and all(t == "string" for t in types)


class TextGenerationRuntime:
    """A transformers generation model behind a :class:`GenerationScheduler` (``predict`` for V2 infer)."""

    inline = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        task: str,
        name: str,
        version: str,
        device: str,
        settings: TextSettings,
        default_max_tokens: int,
    ) -> None:
        self.name = "torch"
        self.task = task
        self.tokenizer = tokenizer
        self.settings = settings
        self.context_length = context_length(tokenizer, model.config) or FALLBACK_CONTEXT_LENGTH
        self.default_max_tokens = min(default_max_tokens, settings.max_tokens_limit)
        self.decoder_only = not getattr(model.config, "is_encoder_decoder", False)
        self.scheduler = GenerationScheduler(
            model,
            tokenizer,
            name=name,
            version=version,
            device=device,
            max_batch_size=settings.max_batch_size,
            batch_wait_s=settings.batch_wait_ms / 1000.0,
            batching=settings.batching,
        )

    def encode(self, text: Any, where: str, max_tokens: int = 0) -> list[int]:  # noqa: ANN401
        """Token ids of one input text; ``InvalidInput`` naming ``where`` when it is not a non-empty
        string or is longer than the model's context."""
        if not isinstance(text, str):
            raise InvalidInput(f"{where}: must be a string (got {type(text).__name__})")
        if not text.strip():
            raise InvalidInput(f"{where}: is empty; give the text to generate from")
        ids = self.tokenizer(text, truncation=False, verbose=False)["input_ids"]
        limit = self.context_length - (max_tokens if self.decoder_only else 0)
        if len(ids) > limit:
            extra = f" minus max_tokens {max_tokens}" if self.decoder_only and max_tokens else ""
            raise InvalidInput(
                f"{where}: {len(ids)} tokens, over the model's context length of "
                f"{self.context_length} tokens{extra}"
            )
        return list(ids)

    def check_frame(self, frame: Frame) -> Frame:
        """Validate and tokenize a V2 infer request's ``text_input`` rows: the frame with their token ids
        (column :data:`TOKEN_IDS`), which :meth:`predict` takes as they are."""
        values = frame.columns[TEXT_INPUT]
        where = f"input '{TEXT_INPUT}' element"
        # V2 infer generates default_max_tokens: a decoder-only model needs room for them after the input
        ids = np.empty(len(values), dtype=object)  # one list per row (equal lengths stay lists)
        for i, v in enumerate(values):
            ids[i] = self.encode(v, f"{where} {i}", self.default_max_tokens)
        return Frame(matrix=None, columns={**frame.columns, TOKEN_IDS: ids}, n_rows=frame.n_rows)

    def predict(self, frame: Frame) -> Any:  # noqa: ANN401 - a runtimes.Prediction
        from mlplatform.serving.runtimes import Prediction

        if TOKEN_IDS not in frame.columns:  # not validated yet (a direct call)
            frame = self.check_frame(frame)
        ids = list(frame.columns[TOKEN_IDS])
        texts = self.scheduler.generate_blocking(ids, GenParams(max_tokens=self.default_max_tokens))
        return Prediction({TEXT_OUTPUT: np.array(texts, dtype=object)})

    def close(self) -> None:
        self.scheduler.close()


class PyfuncTextRuntime:
    """A pyfunc model with string inputs, served by its ``predict`` (V2 infer only)."""

    name = "pyfunc"
    inline = False

    def __init__(self, model: Any, columns: list[str]) -> None:  # noqa: ANN401
        self.model = model
        self.columns = columns

    def check_frame(self, frame: Frame) -> Frame:
        """Validate a V2 infer request's string rows (the frame as it is)."""
        for col in self.columns:
            for i, v in enumerate(frame.columns[col]):
                if not isinstance(v, str):
                    raise InvalidInput(f"input '{col}' element {i}: must be a string")
                if not v.strip():
                    raise InvalidInput(f"input '{col}' element {i}: is empty")
        return frame

    def predict(self, frame: Frame) -> Any:  # noqa: ANN401
        import pandas as pd

        from mlplatform.serving.runtimes import Prediction

        df = pd.DataFrame({c: list(frame.columns[c]) for c in self.columns})
        out = self.model.predict(df)
        if isinstance(out, pd.DataFrame):
            out = out.iloc[:, 0]
        values = [v if isinstance(v, str) else str(v) for v in list(out)]
        return Prediction({TEXT_OUTPUT: np.array(values, dtype=object)})


def load_text_model(
    folder: Path, *, name: str, version: str, torch_device: str = "auto", settings: TextSettings | None = None
) -> Any:  # noqa: ANN401 - a runtimes.LoadedModel
    """Load a text model folder (see :func:`is_text_model`) and warm it up."""
    from mlflow.models import Model

    from mlplatform.serving.runtimes import LoadedModel, resolve_torch_device

    settings = settings or TextSettings()
    start = time.perf_counter()
    mlmodel = Model.load(str(Path(folder) / "MLmodel"))
    outputs = [MetadataTensor(name=TEXT_OUTPUT, datatype="BYTES", shape=[-1])]
    if "transformers" not in mlmodel.flavors:
        import mlflow.pyfunc

        cols = [s.name or TEXT_INPUT for s in mlmodel.signature.inputs.inputs]
        rt = PyfuncTextRuntime(mlflow.pyfunc.load_model(str(folder)), cols)
        return LoadedModel(
            name=name,
            version=version,
            platform="pyfunc",
            schema=InputSchema(tuple(ColumnSpec(c, "string") for c in cols)),
            runtime=rt,
            outputs=outputs,
            check_rows=None,
            runtime_reason="pyfunc model with string inputs",
            load_seconds=time.perf_counter() - start,
            native=rt,
        )
    import mlflow.transformers
    import torch

    conf = mlmodel.flavors["transformers"]
    task = conf.get("task", "")
    if task not in GENERATION_TASKS:
        raise UnsupportedModel(
            f"transformers task '{task}' is not served; served tasks: {', '.join(sorted(GENERATION_TASKS))}"
        )
    device = resolve_torch_device(torch_device)
    if device == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    parts = mlflow.transformers.load_model(str(folder), return_type="components", device=device)
    model, tokenizer = parts["model"], parts["tokenizer"]
    model.eval()
    default_max = default_max_tokens(conf, mlmodel.metadata, model)
    rt = TextGenerationRuntime(
        model,
        tokenizer,
        task=task,
        name=name,
        version=version,
        device=device,
        settings=settings,
        default_max_tokens=default_max,
    )
    rt.scheduler.generate_blocking([rt.encode("warm up", "warm-up")], GenParams(max_tokens=2))
    log.info(
        "loaded text model %s/%s (%s) on %s, context %d tokens",
        name,
        version,
        task,
        device,
        rt.context_length,
        extra={"model": name, "version": version, "runtime": "torch"},
    )
    return LoadedModel(
        name=name,
        version=version,
        platform="transformers",
        schema=InputSchema((ColumnSpec(TEXT_INPUT, "string"),)),
        runtime=rt,
        outputs=outputs,
        check_rows=None,
        runtime_reason=f"text model ({task}): torch with the batching generation scheduler",
        device=device,
        load_seconds=time.perf_counter() - start,
        native=rt,
    )
