"""``ExplainSettings``: the text explain bounds are checked against each other at start-up."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from mlplatform.explain.settings import ExplainSettings


def test_defaults_agree():
    s = ExplainSettings()
    assert s.text_min_evals <= s.text_max_evals <= s.text_max_evals_limit


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"EXPLAIN_TEXT_MIN_EVALS": "500", "EXPLAIN_TEXT_MAX_EVALS_LIMIT": "400"},
            "EXPLAIN_TEXT_MIN_EVALS (500) is above EXPLAIN_TEXT_MAX_EVALS_LIMIT (400)",
        ),
        (
            {"EXPLAIN_TEXT_MAX_EVALS": "3000"},
            "EXPLAIN_TEXT_MAX_EVALS (3000) is outside EXPLAIN_TEXT_MIN_EVALS..EXPLAIN_TEXT_MAX_EVALS_LIMIT (10..2000)",
        ),
        (
            {"EXPLAIN_TEXT_MIN_EVALS": "400"},
            "EXPLAIN_TEXT_MAX_EVALS (300) is outside EXPLAIN_TEXT_MIN_EVALS..EXPLAIN_TEXT_MAX_EVALS_LIMIT (400..2000)",
        ),
    ],
)
def test_disagreeing_text_bounds_fail_naming_the_variables(env, message, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        ExplainSettings()


def test_bounds_may_meet(monkeypatch):
    for name in ("EXPLAIN_TEXT_MIN_EVALS", "EXPLAIN_TEXT_MAX_EVALS", "EXPLAIN_TEXT_MAX_EVALS_LIMIT"):
        monkeypatch.setenv(name, "50")
    assert ExplainSettings().text_max_evals == 50
