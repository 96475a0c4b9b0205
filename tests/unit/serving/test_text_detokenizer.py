"""Incremental detokenization in the generation scheduler: the same text, the same stream and the same stop
handling as decoding the whole output at every token, differentially over many random token sequences.

Tokenizers: the demo summarizer's (BPE, ``▁`` word starts, multi-byte characters as their own tokens), a
byte-level BPE that splits multi-byte characters across tokens (half a character decodes to U+FFFD), and
the first with ``clean_up_tokenization_spaces`` (rules that join text across tokens: the fall-back path).
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from mlplatform.serving.text.detokenizer import IncrementalDetokenizer
from mlplatform.serving.text.scheduler import (
    FINISH_LENGTH,
    FINISH_STOP,
    GenerationScheduler,
    GenParams,
    GenRequest,
    _stop_prefix_len,
)

CORPUS = [
    "Der Bäcker in Zürich verkauft Brötchen für 2 € , sagte er am Montag .",
    "東京 と 大阪 の 天気 は 晴れ です 。 naïve café , déjà vu ? ok !",
    "Emoji 🙂 and 🚀 go to the moon ; it 's a test , isn't it ' quoted ' .",
    "Lisbon , Monday . Acme said on Monday that it will open 12 stores in Lisbon .",
] * 4
SEEDS = range(150)


def _metaspace(cleanup: bool) -> Any:  # noqa: ANN401
    from mlplatform.training.text import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=300)
    tok.clean_up_tokenization_spaces = cleanup
    return tok


def _byte_level() -> Any:  # noqa: ANN401
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


@pytest.fixture(scope="module", params=["metaspace", "byte-level", "metaspace-cleanup"])
def tokenizer(request: pytest.FixtureRequest) -> Any:  # noqa: ANN401
    return {
        "metaspace": lambda: _metaspace(False),
        "byte-level": _byte_level,
        "metaspace-cleanup": lambda: _metaspace(True),
    }[request.param]()


def _random_ids(tok: Any, rng: random.Random, n: int) -> list[int]:  # noqa: ANN401
    """Mostly ordinary tokens, some special ones (skipped when decoding), never end-of-sequence."""
    vocab = [i for i in range(len(tok)) if i != tok.eos_token_id]
    return [rng.choice(vocab) for _ in range(n)]


def test_the_tokenizers_exercise_what_they_are_for(tokenizer) -> None:  # noqa: ANN001
    """Multi-byte characters come out whole (and, byte-level, split across tokens); clean-up joins tokens."""
    for text in CORPUS[:3]:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]).replace(" ", "") == (
            text.replace(" ", "")
            if not tokenizer.clean_up_tokenization_spaces
            else tokenizer.clean_up_tokenization(text).replace(" ", "")
        )
    if "ByteLevel" in type(tokenizer.backend_tokenizer.decoder).__name__:
        assert tokenizer.decode(tokenizer("€", add_special_tokens=False)["input_ids"][:1]) == "\ufffd"


def test_incremental_text_is_the_whole_decode_at_every_token(tokenizer) -> None:  # noqa: ANN001
    for seed in SEEDS:
        rng = random.Random(seed)
        ids = _random_ids(tokenizer, rng, rng.randint(1, 60))
        detok, grown = IncrementalDetokenizer(tokenizer), []
        for token in ids:
            grown.append(token)
            assert detok.text_of(grown) == tokenizer.decode(grown, skip_special_tokens=True), (seed, grown)


def _reference_step(tok: Any, r: dict[str, Any], token: int, params: GenParams) -> str | None:  # noqa: ANN401
    """The scheduler's step as it was: the whole output decoded at every token (the contract)."""
    r["generated"].append(token)
    text = tok.decode(r["generated"], skip_special_tokens=True)
    finished = None
    for s in params.stop:
        k = text.find(s)
        if k >= 0:
            text, finished = text[:k], FINISH_STOP
    if finished is None and len(r["generated"]) >= params.max_tokens:
        finished = FINISH_LENGTH
    if finished is None and text.endswith("\ufffd"):
        return None
    if finished is None:
        text = text[: len(text) - _stop_prefix_len(text, params.stop)]
    if len(text) > len(r["text"]) and text.startswith(r["text"]):
        r["deltas"].append(text[len(r["text"]) :])
        r["text"] = text
    elif text != r["text"] and not text.startswith(r["text"]):
        r["deltas"].append(text[len(r["text"]) :] if len(text) > len(r["text"]) else "")
        r["text"] = text
    return finished


def _scheduler(tok: Any) -> GenerationScheduler:  # noqa: ANN401
    """A scheduler whose decoder steps are driven by hand (no model runs: only its config is read)."""
    config = SimpleNamespace(is_encoder_decoder=True, eos_token_id=tok.eos_token_id, decoder_start_token_id=0)
    return GenerationScheduler(SimpleNamespace(config=config), tok, name="m", version="1")


def test_stream_and_stop_strings_match_whole_decoding(tokenizer) -> None:  # noqa: ANN001
    """Same deltas, text, finish reason and finishing token, with stop strings cut from the text (so they
    span tokens and hold multi-byte characters) and max_tokens both reached and not."""
    sched = _scheduler(tokenizer)
    stopped = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        ids = _random_ids(tokenizer, rng, rng.randint(1, 60))
        whole = tokenizer.decode(ids, skip_special_tokens=True)
        stops = []
        for _ in range(rng.randint(0, 3)):
            if len(whole) > 2:
                k = rng.randrange(len(whole) - 1)
                stops.append(whole[k : k + rng.randint(1, 6)])
        params = GenParams(max_tokens=rng.randint(1, len(ids) + 5), stop=tuple(s for s in stops if s))
        deltas: list[str] = []
        req = GenRequest([], params, lambda ev, out=deltas: out.append(ev[1]) if ev[0] == "delta" else None)
        ref: dict[str, Any] = {"generated": [], "text": "", "deltas": []}
        for n, token in enumerate(ids, 1):
            want = _reference_step(tokenizer, ref, token, params)
            got = sched._step(req, token)
            assert got == (want is not None), (seed, n)
            if want is not None:
                assert req.finish_reason == want, seed
                stopped += want == FINISH_STOP
                break
        assert deltas == ref["deltas"], seed
        assert req.text == ref["text"], seed
        if (
            not tokenizer.clean_up_tokenization_spaces
        ):  # clean-up can change text already sent, both ways alike
            assert "".join(deltas) == req.text, seed
    assert stopped > len(SEEDS) // 4  # the stop strings did stop many generations


class _CountingTokenizer:
    """The tokenizer, counting the token ids it is asked to decode."""

    def __init__(self, tok: Any) -> None:  # noqa: ANN401
        self._tok, self.decoded = tok, 0

    def decode(self, ids: list[int], **kw: Any) -> str:  # noqa: ANN401
        self.decoded += len(ids)
        return self._tok.decode(ids, **kw)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self._tok, name)


def test_decoding_work_grows_linearly_with_the_output(tokenizer) -> None:  # noqa: ANN001
    """A 400-token output decodes a few ids per token (decoding the whole output each time: ~80,000)."""
    counting = _CountingTokenizer(tokenizer)
    sched = _scheduler(counting)
    rng = random.Random(1)
    req = GenRequest([], GenParams(max_tokens=400), lambda ev: None)
    ids = _random_ids(tokenizer, rng, 400)
    done = [sched._step(req, t) for t in ids]
    assert done[-1] and not any(done[:-1])
    assert req.text == tokenizer.decode(ids, skip_special_tokens=True)
    assert counting.decoded < 10 * len(ids), counting.decoded


def test_text_held_back_for_a_stop_string_is_sent_when_the_model_ends(tokenizer) -> None:  # noqa: ANN001
    """A tail that might begin a stop string is held back; when end-of-sequence comes instead, that tail is
    part of the answer (it used to be dropped from the text and the stream)."""
    sched = _scheduler(tokenizer)
    ids = tokenizer(CORPUS[3], add_special_tokens=False)["input_ids"]
    whole = tokenizer.decode(ids, skip_special_tokens=True)
    tail = whole[-3:]
    params = GenParams(max_tokens=len(ids) + 5, stop=(tail + "\u2603",))  # never completed
    deltas: list[str] = []
    req = GenRequest([], params, lambda ev: deltas.append(ev[1]) if ev[0] == "delta" else None)
    for token in ids:
        assert not sched._step(req, token)
    assert not req.text.endswith(tail)  # held back while the stop string could still follow
    assert sched._step(req, tokenizer.eos_token_id)
    assert req.finish_reason == FINISH_STOP
    assert req.text == whole
    if not tokenizer.clean_up_tokenization_spaces:
        assert "".join(deltas) == whole


def test_runs_of_special_tokens_cost_no_decoding_and_change_no_text(tokenizer) -> None:  # noqa: ANN001
    """Special tokens decode to nothing: mixed in (a fifth of the ids), the text is still the whole decode
    at every token, and 400 of them in a row decode nothing (the window used to grow over them: ~80,000)."""
    for seed in SEEDS:
        rng = random.Random(seed)
        ids = [t if rng.random() > 0.2 else tokenizer.pad_token_id for t in _random_ids(tokenizer, rng, 60)]
        detok, grown = IncrementalDetokenizer(tokenizer), []
        for token in ids:
            grown.append(token)
            assert detok.text_of(grown) == tokenizer.decode(grown, skip_special_tokens=True), (seed, grown)
    counting = _CountingTokenizer(tokenizer)
    detok, pads = IncrementalDetokenizer(counting), []
    for _ in range(400):
        pads.append(tokenizer.pad_token_id)
        assert detok.text_of(pads) == ""
    assert counting.decoded < 10 * len(pads), counting.decoded
