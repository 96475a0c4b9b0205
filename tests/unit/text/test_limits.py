"""A text model's context length and default output length: one rule, read by serving and explainability."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

import mlplatform
from mlplatform.text.limits import DEFAULT_MAX_NEW_TOKENS, context_length, default_max_tokens

PACKAGE = Path(mlplatform.__file__).parent


@pytest.mark.parametrize(
    ("max_length", "config", "want"),
    [
        (128, {"n_positions": 64}, 128),  # the tokenizer's limit first
        (int(1e30), {"n_positions": 64, "max_position_embeddings": 32}, 64),  # unset: the config's
        (None, {"max_position_embeddings": 256}, 256),
        (None, {"max_sequence_length": 300}, 300),
        (0, {"n_positions": 0}, None),  # neither says
        (None, {}, None),
    ],
)
def test_context_length(max_length, config, want) -> None:  # noqa: ANN001
    tokenizer = SimpleNamespace(model_max_length=max_length)
    assert context_length(tokenizer, SimpleNamespace(**config)) == want


def test_default_max_tokens_in_order_of_precedence() -> None:
    model = SimpleNamespace(generation_config=SimpleNamespace(max_new_tokens=7))
    flavour = {"inference_config": {"max_new_tokens": 5}}
    metadata = {"inference_config": {"max_new_tokens": 6}}
    assert default_max_tokens(flavour, metadata, model) == 5
    assert default_max_tokens({}, metadata, model) == 6
    assert default_max_tokens({}, None, model) == 7
    assert default_max_tokens({}, None, SimpleNamespace()) == DEFAULT_MAX_NEW_TOKENS
    assert default_max_tokens({}, {}, SimpleNamespace(generation_config=None)) == DEFAULT_MAX_NEW_TOKENS


def test_serving_and_explain_read_the_limits_from_the_shared_module() -> None:
    """Each imports them from mlplatform.text.limits and neither defines its own (checked with ``ast``)."""
    for rel in ("serving/text/runtime.py", "explain/text.py"):
        tree = ast.parse((PACKAGE / rel).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not defined & {"context_length", "default_max_tokens"}, rel
        imported = {
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module == "mlplatform.text.limits"
            for a in n.names
        }
        assert {"context_length", "default_max_tokens"} <= imported, rel
