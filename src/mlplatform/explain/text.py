"""Explanations of text models: token attributions with SHAP's Partition explainer and a Text masker.

A registered MLflow ``transformers`` model (text2text-generation, e.g. the demo ``summarizer`` of
:mod:`mlplatform.training.text`, or a causal language model for text-generation) is explained the way SHAP explains text-to-text models
(``shap.models.TeacherForcing`` + ``shap.maskers.Text`` + ``shap.explainers.PartitionExplainer``):

* the model first generates its output for the input, greedily, with its own generation config
  (``max_new_tokens`` overridable per request), as serving answers it;
* each explained quantity is the log-odds of one output token given the (masked) input and the
  output tokens before it (teacher forcing), so there is one explanation per output token;
* the Text masker hides input tokens (a run of hidden tokens becomes one ``...``) and groups them
  hierarchically (Owen values over the masker's token clustering); ``max_evals`` model evaluations
  bound the cost of one text.

Owen values are efficient: for every output token ``base_value + Σ attributions == output`` (the
log-odds with the whole input), whatever ``max_evals`` is. The base value is the output token's
log-odds when every input token is masked.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.core.errors import InvalidInput
from mlplatform.explain.explainers import UnsupportedModel, unloaded
from mlplatform.text.limits import context_length, default_max_tokens
from mlplatform.v2.codec import ParsedRequest

log = logging.getLogger("mlplatform.explain")

TEXT_FLAVOUR = "transformers"
TEXT_TASKS = ("text2text-generation", "summarization", "translation", "text-generation")
#: V2 input tensor of text models (as serving's text flavour names it).
TEXT_INPUT = "text_input"
EXPLAINER_KIND = "partition"
OUTPUT_SPACE = "log_odds"
# What SHAP uses for text infilling with language models ("..."), with a trailing space: the masker
# writes " " + mask_token in place of a hidden run, and token segments carry their own trailing space
# only, so a plain "..." glues onto the next kept word ("...blue"), which tokenizes as another word.
MASK_TOKEN = "... "
WARM_UP_TEXT = "warm up the explainer"
_LOGODDS_CLIP = -1e-12  # log p is clipped below 0 so log-odds stay finite when p rounds to 1


def is_text_model(flavors: dict[str, Any]) -> bool:
    """Whether an MLflow model's flavours make it a text model explained here."""
    return TEXT_FLAVOUR in (flavors or {})


@dataclass
class TextModel:
    """A registered text model version loaded for explanation."""

    name: str
    version: str
    task: str
    model: Any  # transformers.PreTrainedModel (encoder-decoder)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    context_length: int  # most input tokens (special tokens included)
    max_new_tokens: int  # output tokens generated when a request names no max_tokens

    @property
    def label(self) -> str:
        return f"'{self.name}' version {self.version}"


def load_text_model(
    name: str, version: str, local: str, flavors: dict[str, Any], metadata: dict[str, Any] | None = None
) -> TextModel:
    """Load a downloaded MLflow ``transformers`` model (``local``, with its MLmodel's ``flavors`` and
    ``metadata``) as model + tokenizer, with serving's context length and default output length."""
    import mlflow.transformers

    label = f"'{name}' version {version}"
    conf = flavors.get(TEXT_FLAVOUR) or {}
    task = str(conf.get("task") or "")
    if task not in TEXT_TASKS:
        raise UnsupportedModel(
            f"model {label} has transformers task {task!r}; text explanations support {', '.join(TEXT_TASKS)}"
        )
    from shap.utils.transformers import is_transformers_lm

    components = mlflow.transformers.load_model(local, return_type="components")
    model, tokenizer = components.get("model"), components.get("tokenizer")
    if tokenizer is None or not is_transformers_lm(model):  # seq2seq or causal language model
        raise UnsupportedModel(f"model {label} is not a sequence-to-sequence or causal language model")
    limit = context_length(tokenizer, model.config)
    if limit is None:
        raise UnsupportedModel(f"model {label}: neither its tokenizer nor its config gives a context length")
    return TextModel(name, version, task, model, tokenizer, limit, default_max_tokens(conf, metadata, model))


@dataclass
class TextExplanation:
    """Token attributions of one text: ``attributions[j][i]`` is input token i's share of output token j."""

    text_output: str
    input_tokens: list[str]
    output_tokens: list[str]
    base_values: list[float]  # per output token: its log-odds with every input token masked
    outputs: list[float]  # per output token: its log-odds given the whole input
    attributions: list[list[float]]  # (output tokens, input tokens)
    evaluations: int  # model evaluations spent (masked inputs, base and full input included)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text_output": self.text_output,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "base_values": self.base_values,
            "outputs": self.outputs,
            "attributions": self.attributions,
            "evaluations": self.evaluations,
        }


class _FixedTarget:
    """The output being explained (token ids, shape (1, n)), handed to TeacherForcing for every masked input."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def __call__(self, *args: Any) -> np.ndarray:
        return self.ids


def _teacher_forcing_class() -> type:
    import scipy.special
    import shap

    class StableTeacherForcing(shap.models.TeacherForcing):
        """shap's TeacherForcing with a numerically stable log-odds (log-softmax, no exp overflow) that
        evaluates each distinct masked text once per explanation: the Partition explainer asks for the
        same coalition from several branches of its recursion."""

        _seen: dict[str, np.ndarray] | None = None

        def reset_cache(self) -> None:
            """Forget the outputs of the last explanation (call before explaining a new output)."""
            self._seen = {}

        def __call__(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
            if self._seen is None:
                return super().__call__(X, Y)
            keys = [str(x) for x in X]
            todo = [k for k in dict.fromkeys(keys) if k not in self._seen]
            if todo:  # Y holds the same target on every row within one explanation
                out = super().__call__(np.array(todo, dtype=object), Y[: len(todo)])
                self._seen.update(zip(todo, out, strict=True))
            return np.stack([self._seen[k] for k in keys])

        def get_logodds(self, logits: np.ndarray) -> np.ndarray:
            ids = np.asarray(self.output[0], dtype=np.int64)
            logp = scipy.special.log_softmax(logits, axis=-1)
            picked = np.take_along_axis(logp, ids[None, :, None], axis=-1)[..., 0]
            picked = np.minimum(picked, _LOGODDS_CLIP)
            return picked - np.log(-np.expm1(picked))

    return StableTeacherForcing


class TextShapExplainer:
    """Partition SHAP over a text model's tokens. Not re-entrant: calls are serialised by a lock.

    Requests are validated (:meth:`count_tokens`, :meth:`output_ids`) on the event loop while an
    explanation runs in a worker thread, and a fast tokenizer is not thread-safe (``RuntimeError:
    Already borrowed`` when one thread changes its padding while another encodes): validation uses its
    own copy of the tokenizer; the model's is the explanation's.
    """

    kind = EXPLAINER_KIND
    output_space = OUTPUT_SPACE
    feature_perturbation = None

    def __init__(self, model: TextModel, settings: Any) -> None:
        self.model = model
        self.settings = settings
        self._lock = threading.Lock()
        self.device: Any = None
        self._teacher: Any = None
        self._masker: Any = None
        self._request_tokenizer: Any = None  # the event loop's copy of the tokenizer

    @property
    def feature_names(self) -> list[str]:
        return [TEXT_INPUT]

    def load(self) -> None:
        """Move the model to its device and run one small explanation (numba compiles shap's kernels
        on first use: several seconds the first request would otherwise pay)."""
        import shap
        import torch

        s = self.settings
        want_cuda = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.model.model.to(self.device).eval()
        self._request_tokenizer = copy.deepcopy(self.model.tokenizer)
        self._teacher = _teacher_forcing_class()(
            self.model.model, self.model.tokenizer, batch_size=s.text_batch_size, device=self.device
        )
        self._masker = shap.maskers.Text(
            self.model.tokenizer, mask_token=MASK_TOKEN, collapse_mask_token=True
        )
        start = time.perf_counter()
        self.explain([WARM_UP_TEXT], max_evals=20, max_tokens=2)
        log.info("text explainer of %s warmed up in %.2fs", self.model.label, time.perf_counter() - start)

    def unload(self) -> None:
        """Drop the explainer state (waiting for a running explanation to finish)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._teacher = None
        self._masker = None

    def count_tokens(self, text: str) -> int:
        """Input tokens of ``text`` as the model sees it (special tokens included); for request validation."""
        return len(self._request_tokenizer(text)["input_ids"])

    def _generate(self, text: str, max_tokens: int) -> np.ndarray:
        """The model's greedy output token ids for ``text`` (start and end-of-sequence tokens removed)."""
        import torch

        tok = self.model.tokenizer
        enc = tok([text], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=max_tokens,
                pad_token_id=tok.pad_token_id,
                do_sample=False,
                num_beams=1,
            )
        ids = out[0].detach().cpu().numpy().tolist()
        if not self.model.model.config.is_encoder_decoder:  # decoder-only: the input comes back first
            ids = ids[enc["input_ids"].shape[1] :]
        elif ids and ids[0] == self.model.model.config.decoder_start_token_id:
            ids = ids[1:]
        eos = tok.eos_token_id
        if eos is not None and eos in ids:
            ids = ids[: ids.index(eos)]
        return np.asarray([ids], dtype=np.int64)

    def output_ids(self, output: str) -> list[int]:
        """Token ids of a given output text, as the model would write it (no special tokens); for request
        validation."""
        return list(self._request_tokenizer(output, add_special_tokens=False)["input_ids"])

    def explain(
        self,
        texts: list[str],
        *,
        max_evals: int,
        max_tokens: int,
        output_ids: list[list[int]] | None = None,
    ) -> list[TextExplanation]:
        """Explain each text's generated output, or the given outputs' token ids (:meth:`output_ids`), one
        explanation per output token."""
        with self._lock:
            if self._teacher is None:
                raise unloaded(self.model.label)
            given = output_ids if output_ids is not None else [None] * len(texts)
            return [self._explain_one(t, max_evals, max_tokens, o) for t, o in zip(texts, given, strict=True)]

    def _explain_one(
        self, text: str, max_evals: int, max_tokens: int, given_ids: list[int] | None
    ) -> TextExplanation:
        import shap

        tok = self.model.tokenizer
        if given_ids is None:
            target = self._generate(text, max_tokens)
        else:
            target = np.asarray([given_ids], dtype=np.int64)
        output_ids = target[0].tolist()
        input_tokens = self._input_tokens(text)
        if not output_ids:  # the model answers with end-of-sequence at once: nothing to attribute
            return TextExplanation("", input_tokens, [], [], [], [], 0)
        self._teacher.reset_cache()
        masker = shap.maskers.OutputComposite(self._masker, _FixedTarget(target))
        explainer = shap.explainers.PartitionExplainer(self._teacher, masker)
        result = explainer([text], max_evals=max_evals, batch_size=self.settings.text_batch_size, silent=True)
        values = np.asarray(result.values[0], dtype=np.float64)  # (input tokens, output tokens)
        base = np.asarray(result.base_values[0], dtype=np.float64).reshape(-1)
        # the explained quantity on the unmasked input, evaluated on its own (efficiency can be checked)
        full = np.asarray(self._teacher(np.array([text]), target), dtype=np.float64).reshape(-1)
        return TextExplanation(
            text_output=str(tok.decode(output_ids, skip_special_tokens=True)),
            input_tokens=input_tokens,
            output_tokens=[str(tok.decode([i])) for i in output_ids],
            base_values=base.tolist(),
            outputs=full.tolist(),
            attributions=values.T.tolist(),
            evaluations=int(explainer.last_eval_count) + 2,  # + SHAP's base and full-input evaluations
        )

    def _input_tokens(self, text: str) -> list[str]:
        """Each input token's text segment (special tokens by their own name), as the masker splits it."""
        segments, ids = self._masker.token_segments(text)
        names = self.model.tokenizer.convert_ids_to_tokens(list(ids))
        return [seg.strip() or str(name) for seg, name in zip(segments, names, strict=True)]


# request handling ----------------------------------------------------------------------------------
@dataclass
class TextRequest:
    texts: list[str]
    max_evals: int
    max_tokens: int
    output_ids: list[list[int]] | None = None  # parameters.text_output's token ids: explained, not generated


def _int_parameter(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"parameters.{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(f"parameters.{key}: must be between {low} and {high}, got {value}")
    return value


def text_request(req: ParsedRequest, explainer: TextShapExplainer, settings: Any) -> TextRequest:
    """Validate a parsed V2 request for a text model: texts, ``max_evals`` and ``max_tokens``."""
    label = explainer.model.label
    tensor = req.input(TEXT_INPUT)
    if tensor is None:
        names = ", ".join(repr(t.name) for t in req.inputs)
        raise InvalidInput(f"input '{TEXT_INPUT}' is missing (model {label} takes text; got {names})")
    others = [t.name for t in req.inputs if t.name != TEXT_INPUT]
    if others:
        raise InvalidInput(f"inputs {others}: model {label} takes only '{TEXT_INPUT}'")
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input '{TEXT_INPUT}': datatype must be BYTES, got {tensor.datatype}")
    if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidInput(f"input '{TEXT_INPUT}': shape must be [N] or [N, 1], got {list(tensor.shape)}")
    texts = [str(t) for t in tensor.array.reshape(-1).tolist()]
    if len(texts) > settings.text_max_rows:
        raise InvalidInput(
            f"input '{TEXT_INPUT}': {len(texts)} texts, at most {settings.text_max_rows} per explain request "
            "(EXPLAIN_TEXT_MAX_ROWS)"
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"input '{TEXT_INPUT}': element {i} is empty")
    params = req.parameters
    max_evals = _int_parameter(
        params, "max_evals", settings.text_max_evals, settings.text_min_evals, settings.text_max_evals_limit
    )
    max_tokens = _int_parameter(
        params,
        "max_tokens",
        min(explainer.model.max_new_tokens, settings.text_max_tokens_limit),
        1,
        settings.text_max_tokens_limit,
    )
    given = _given_outputs(params, texts, explainer, settings)
    # a decoder-only model reads its output after its input in one sequence: both must fit the context
    decoder_only = not getattr(explainer.model.model.config, "is_encoder_decoder", False)
    limit = explainer.model.context_length
    for i, text in enumerate(texts):
        n = explainer.count_tokens(text)
        extra = (len(given[i]) if given else max_tokens) if decoder_only else 0
        if n + extra > limit:
            plus = f" + {extra} output tokens" if extra else ""
            raise InvalidInput(
                f"input '{TEXT_INPUT}': element {i} has {n} tokens{plus}, over the context length of model "
                f"{label} ({limit})"
            )
    return TextRequest(texts, max_evals, max_tokens, given)


def _given_outputs(
    params: dict[str, Any], texts: list[str], explainer: TextShapExplainer, settings: Any
) -> list[list[int]] | None:
    """``parameters.text_output``: one output text per input (a string for a single input), as token ids
    (tokenized once per request)."""
    if "text_output" not in params:
        return None
    value = params["text_output"]
    outputs = [value] if isinstance(value, str) else value
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise InvalidInput("parameters.text_output: must be a string or a list of strings")
    if len(outputs) != len(texts):
        raise InvalidInput(
            f"parameters.text_output: {len(outputs)} output texts for {len(texts)} input texts (one per input)"
        )
    limit = settings.text_max_tokens_limit
    ids = [explainer.output_ids(out) for out in outputs]
    for i, out_ids in enumerate(ids):
        if not out_ids:
            raise InvalidInput(f"parameters.text_output: element {i} is empty")
        if len(out_ids) > limit:
            raise InvalidInput(
                f"parameters.text_output: element {i} has {len(out_ids)} tokens, more than {limit}"
            )
    return ids


async def explain_text(
    explainer: TextShapExplainer, req: ParsedRequest, settings: Any, metrics: Any, request_id: str = ""
) -> dict[str, Any]:
    """The TextExplainResponse document for a parsed V2 request to a text model."""
    import asyncio

    spec = text_request(req, explainer, settings)
    model = explainer.model
    start = time.perf_counter()
    rows = await asyncio.to_thread(
        explainer.explain,
        spec.texts,
        max_evals=spec.max_evals,
        max_tokens=spec.max_tokens,
        output_ids=spec.output_ids,
    )
    metrics.latency.labels(model.name, explainer.kind).observe(time.perf_counter() - start)
    metrics.rows.labels(model.name, explainer.kind).inc(len(rows))
    return {
        "id": req.id or request_id,
        "model_name": model.name,
        "model_version": model.version,
        "explainer": explainer.kind,
        "output_space": explainer.output_space,
        "max_evals": spec.max_evals,
        "max_tokens": spec.max_tokens,
        "explanations": [r.as_dict() for r in rows],
    }
