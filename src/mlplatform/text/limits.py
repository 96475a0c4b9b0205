"""A text model's limits as its files state them: the context length (most input tokens) and how many
tokens it writes when a request names no ``max_tokens``. Model-serving generates with these and
explainability explains the output serving would give, so both read them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: transformers' ``model_max_length`` when the tokenizer does not set one is ~1e30: "unset".
_UNSET_MAX_LENGTH = 1_000_000
#: model config attributes that give the position limit, most specific first
_POSITION_LIMITS = ("n_positions", "max_position_embeddings", "max_sequence_length")
#: output tokens when neither the MLflow model nor its generation config names ``max_new_tokens``
DEFAULT_MAX_NEW_TOKENS = 32


def context_length(tokenizer: Any, config: Any) -> int | None:  # noqa: ANN401 - transformers objects
    """The longest input in tokens (special tokens included): the tokenizer's ``model_max_length`` when
    set, else the model config's position limit; ``None`` when neither gives one."""
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < _UNSET_MAX_LENGTH:
        return n
    for attr in _POSITION_LIMITS:
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def default_max_tokens(
    flavor_conf: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    model: Any,  # noqa: ANN401
) -> int:
    """Output tokens for a request that names none: ``max_new_tokens`` of the MLflow ``transformers``
    flavour's ``inference_config``, else of the model metadata's, else of the model's generation
    config, else :data:`DEFAULT_MAX_NEW_TOKENS`."""
    gen_conf = getattr(model, "generation_config", None)
    return int(
        (flavor_conf.get("inference_config") or {}).get("max_new_tokens")
        or ((metadata or {}).get("inference_config") or {}).get("max_new_tokens")
        or getattr(gen_conf, "max_new_tokens", None)
        or DEFAULT_MAX_NEW_TOKENS
    )
