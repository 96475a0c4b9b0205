"""Incremental detokenization: the text of a growing output, one token at a time, without decoding the
whole output at every step.

Decoding every generated token's whole output again costs O(n) per token and O(n²) per answer. As
vLLM's ``detokenize_incrementally`` does, :class:`IncrementalDetokenizer` decodes only a window: the
tokens since the last committed text plus the tokens committed just before them, which give the new
tokens their context (a word-start marker's space, the rest of a multi-byte character). The new
text is the window's text after the text of its already-committed part. Text ending in U+FFFD (half
a UTF-8 character so far) is not committed until the rest arrives. Where a token changes the text
before it, the window's text does not extend its committed part's, and the whole output is decoded
instead. A tokenizer's clean-up rules (``clean_up_tokenization_spaces``: `` 's`` -> ``'s``) join text
across tokens, so the text is kept without them and cleaned up whole at every step, as ``decode``
does (string replacements, linear and cheap beside decoding). Special tokens (padding, sentinels,
markers) decode to nothing, so they are dropped before the window: a run of them would otherwise
never commit and the window would grow back to the whole output. The result is always
``tokenizer.decode(ids, skip_special_tokens=True)``.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"  # what an incomplete UTF-8 sequence decodes to


class IncrementalDetokenizer:
    """The decoded text of one growing token sequence (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:  # noqa: ANN401 - a transformers tokenizer
        self._tokenizer = tokenizer
        self._text = ""  # text of ids[:_read]: complete characters
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text is in _text
        self._prefix_text = ""  # text of ids[_prefix:_read], decoded alone
        self._cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._special = frozenset(getattr(tokenizer, "all_special_ids", ()))
        self._kept: list[int] = []  # the ids seen so far, less special tokens
        self._seen = 0  # how many ids of the caller's list are in _kept

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def text_of(self, ids: list[int]) -> str:
        """``tokenizer.decode(ids, skip_special_tokens=True)``, where ``ids`` extends the ``ids`` of the
        previous call (the same list, grown by one or more tokens)."""
        self._kept.extend(t for t in ids[self._seen :] if t not in self._special)
        self._seen = len(ids)
        ids = self._kept
        window = self._decode(ids[self._prefix :])
        if window.startswith(self._prefix_text):
            tail = window[len(self._prefix_text) :]
            text = self._text + tail
        else:  # a token changed the text before it: decode everything (rare)
            text = self._decode(ids)
            tail = text[len(self._text) :] if text.startswith(self._text) else text
        if tail and not text.endswith(REPLACEMENT):  # commit: the window moves on
            self._text = text
            self._prefix, self._read = self._read, len(ids)
            self._prefix_text = self._decode(ids[self._prefix : self._read])
        return str(self._tokenizer.clean_up_tokenization(text)) if self._cleanup else text
