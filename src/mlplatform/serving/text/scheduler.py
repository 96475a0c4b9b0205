"""The per-model generation scheduler: concurrent generation requests decoded as one batch.

One worker thread per model runs the torch work. Requests wait in a queue; the worker takes up to
``max_batch_size`` of them (waiting up to ``batch_wait_s`` for more after the first), pads their
token ids, runs the encoder once (encoder-decoder models; a decoder-only model runs its prompt once,
left-padded), then a step-by-step decoder loop that feeds only the newest token and reuses the KV
cache. Each request has its own ``max_tokens``, ``stop`` strings, ``temperature``/``top_p`` and seed;
a request that finishes (end-of-sequence, a stop string, ``max_tokens``) or whose caller went away
(:meth:`GenRequest.cancel`, e.g. a client that disconnected from a stream) is dropped from the batch
at the next step: its rows of the encoder states, attention mask and KV cache are removed.

Batching is per round: requests that arrive while a batch is decoding wait for the next round (no
joining a running batch; its KV cache has another length).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from mlplatform.serving.text.detokenizer import IncrementalDetokenizer
from mlplatform.serving.text.metrics import KIND_DISCONNECTED, KIND_INTERNAL, GenerationMetrics

log = logging.getLogger("mlplatform.serving.text")

FINISH_STOP = "stop"  # end-of-sequence token or a stop string
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_CANCELLED = "cancelled"


class GenerationFailed(RuntimeError):
    """The model raised while generating (the caller gets a 500 without the details)."""


class SchedulerClosed(GenerationFailed):
    """The version was swapped out or unloaded before the request reached its scheduler: the caller
    submits it again to the version now served."""


@dataclass(frozen=True)
class GenParams:
    """Per-request generation parameters (validated by the routes)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class GenRequest:
    """One caller's generation: its token ids, parameters, and where its text goes."""

    ids: list[int]
    params: GenParams
    emit: Callable[[tuple[str, Any]], None]  # ("delta", str) | ("done", reason) | ("error", str)
    submitted: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    first_token_at: float | None = None
    finish_reason: str | None = None
    cancelled: bool = False
    detokenizer: IncrementalDetokenizer | None = None

    def cancel(self) -> None:
        """Drop this request from its batch at the next decoder step (thread-safe: a flag)."""
        self.cancelled = True


class GenerationScheduler:
    """Batches the generation requests of one model (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        version: str,
        device: str = "cpu",
        max_batch_size: int = 8,
        batch_wait_s: float = 0.005,
        batching: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name, self.version = name, version
        self.device = device
        self.max_batch_size = max_batch_size if batching else 1
        self.batch_wait_s = batch_wait_s
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else next(iter(self.eos_ids), 0))
        start = getattr(model.config, "decoder_start_token_id", None)
        self.start_id = int(start if start is not None else self.pad_id)
        self.metrics: GenerationMetrics | None = None
        self._pending: list[GenRequest] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self.batches: list[int] = []  # sizes of the last batches (tests and the bench read it)

    # ----- submitting -----------------------------------------------------------------------------

    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._closed:
                raise SchedulerClosed(f"model '{self.name}' version {self.version} is unloading")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"generate-{self.name}", daemon=True)
                self._thread.start()
            self._pending.append(req)
            self._in_flight += 1
            self._set_in_flight()
            self._cond.notify()

    async def stream(
        self, ids: list[int], params: GenParams, on_finish: Callable[[str], None] | None = None
    ) -> AsyncIterator[str]:
        """Text chunks as they are generated; closing the iterator early cancels the request.
        ``on_finish`` gets the finish reason (``stop`` or ``length``) when the text is complete."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        req = GenRequest(ids, params, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
        self.submit(req)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "delta":
                    yield value
                elif kind == "done":
                    if on_finish is not None:
                        on_finish(value)
                    return
                else:
                    raise GenerationFailed(value)
        finally:
            if req.finish_reason is None:
                req.cancel()

    def generate_blocking(self, batch_ids: list[list[int]], params: GenParams) -> list[str]:
        """Whole texts for several inputs (V2 infer, from a worker thread): one request per row."""
        if not batch_ids:
            return []  # nothing to wait for (a V2 request may have zero rows)
        done = threading.Event()
        remaining = [len(batch_ids)]
        errors: list[str] = []
        lock = threading.Lock()

        def emit_for(_: int) -> Callable[[tuple[str, Any]], None]:
            def emit(ev: tuple[str, Any]) -> None:
                if ev[0] == "delta":
                    return
                with lock:
                    if ev[0] == "error":
                        errors.append(ev[1])
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

            return emit

        reqs = [GenRequest(ids, params, emit_for(i)) for i, ids in enumerate(batch_ids)]
        for r in reqs:
            self.submit(r)
        done.wait()
        if errors:
            raise GenerationFailed(errors[0])
        return [r.text for r in reqs]

    def close(self) -> None:
        """Take no more requests; the worker generates every request already submitted, then exits, so
        a hot swap or an unload loses nothing it accepted. Returns at once (it runs on the event loop)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ----- the worker -----------------------------------------------------------------------------

    def _set_in_flight(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.labels(self.name).set(self._in_flight)

    def _loop(self) -> None:
        import torch

        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed, and everything submitted is answered
                    return
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._pending) < self.max_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[: self.max_batch_size]
                del self._pending[: self.max_batch_size]
            live = []
            for r in batch:
                if r.cancelled:
                    self._finish(r, FINISH_CANCELLED)
                else:
                    live.append(r)
            if not live:
                continue
            self.batches = [*self.batches[-63:], len(live)]
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.name).observe(len(live))
            try:
                with torch.inference_mode():
                    self._decode(live)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the worker
                log.exception("generation with %s/%s failed", self.name, self.version)
                for r in live:
                    if r.finish_reason is None:
                        self._finish(r, None, error=f"generation failed: {type(exc).__name__}")

    def _decode(self, reqs: list[GenRequest]) -> None:
        import torch

        dev = self.device
        n = len(reqs)
        length = max(len(r.ids) for r in reqs)
        ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, r in enumerate(reqs):
            k = len(r.ids)
            if self.encoder_decoder:  # right padding for the encoder
                ids[i, :k] = torch.tensor(r.ids)
                mask[i, :k] = 1
            else:  # left padding: every prompt ends at the last column
                ids[i, length - k :] = torch.tensor(r.ids)
                mask[i, length - k :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        model = self.model
        if self.encoder_decoder:
            hidden = model.get_encoder()(
                input_ids=ids, attention_mask=mask, return_dict=True
            ).last_hidden_state
            step_in = torch.full((n, 1), self.start_id, dtype=torch.long, device=dev)
            out = model(
                encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=step_in, use_cache=True
            )
        else:
            hidden = None
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            positions = positions[:, -1:]
        past = out.past_key_values
        generators = [_generator(r.params.seed, dev) for r in reqs]
        while True:
            next_ids = self._sample(out.logits[:, -1, :], reqs, generators)
            keep = []
            for j, r in enumerate(reqs):
                if r.cancelled:
                    self._finish(r, FINISH_CANCELLED)
                elif not self._step(r, int(next_ids[j])):
                    keep.append(j)
            if not keep:
                return
            if len(keep) < len(reqs):  # drop finished and cancelled rows from everything batched
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                reqs = [reqs[j] for j in keep]
                generators = [generators[j] for j in keep]
                next_ids = next_ids.index_select(0, idx)
                mask = mask.index_select(0, idx)
                past.reorder_cache(idx)
                if hidden is not None:
                    hidden = hidden.index_select(0, idx)
                else:
                    positions = positions.index_select(0, idx)
            step_in = next_ids[:, None]
            if self.encoder_decoder:
                out = model(
                    encoder_outputs=(hidden,),
                    attention_mask=mask,
                    decoder_input_ids=step_in,
                    past_key_values=past,
                    use_cache=True,
                )
            else:
                mask = torch.cat([mask, torch.ones((len(reqs), 1), dtype=mask.dtype, device=dev)], dim=1)
                positions = positions + 1
                out = model(
                    input_ids=step_in,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                )
            past = out.past_key_values

    def _sample(self, logits: Any, reqs: list[GenRequest], generators: list[Any]) -> Any:
        import torch

        chosen = logits.argmax(dim=-1)
        for j, r in enumerate(reqs):
            p = r.params
            if p.temperature <= 0:
                continue
            probs = torch.softmax(logits[j].float() / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                cut = sorted_p.cumsum(-1) - sorted_p > p.top_p  # keep the smallest set reaching top_p
                sorted_p[cut] = 0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            chosen[j] = torch.multinomial(probs, 1, generator=generators[j])[0]
        return chosen

    def _step(self, r: GenRequest, token: int) -> bool:
        """Add ``token`` to ``r``, send its new text; True when ``r`` is finished."""
        now = time.perf_counter()
        if r.first_token_at is None:
            r.first_token_at = now
            if self.metrics is not None:
                self.metrics.ttft.labels(self.name, self.version).observe(now - r.submitted)
        if token in self.eos_ids:
            if r.detokenizer is not None:  # send what was held back: no stop string can follow the end
                self._send(r, r.detokenizer.text_of(r.generated))
            self._finish(r, FINISH_STOP)
            return True
        r.generated.append(token)
        if r.detokenizer is None:
            r.detokenizer = IncrementalDetokenizer(self.tokenizer)
        text = r.detokenizer.text_of(r.generated)  # the whole text, decoding only the newest tokens
        finished = None
        for s in r.params.stop:
            k = text.find(s)
            if k >= 0:
                text, finished = text[:k], FINISH_STOP
        if finished is None and len(r.generated) >= r.params.max_tokens:
            finished = FINISH_LENGTH
        if finished is None and text.endswith("\ufffd"):
            return False  # half a UTF-8 character: wait for the rest
        if finished is None:  # hold back a tail that may be the start of a stop string
            text = text[: len(text) - _stop_prefix_len(text, r.params.stop)]
        self._send(r, text)
        if finished is not None:
            self._finish(r, finished)
            return True
        return False

    @staticmethod
    def _send(r: GenRequest, text: str) -> None:
        """Make ``text`` the request's text, sending the caller what it has not had yet."""
        if len(text) > len(r.text) and text.startswith(r.text):
            r.emit(("delta", text[len(r.text) :]))
            r.text = text
        elif text != r.text and not text.startswith(r.text):  # the decoded prefix changed: send the rest
            r.emit(("delta", text[len(r.text) :] if len(text) > len(r.text) else ""))
            r.text = text

    def _finish(self, r: GenRequest, reason: str | None, *, error: str | None = None) -> None:
        if r.finish_reason is not None:
            return
        r.finish_reason = reason or "error"
        with self._cond:
            self._in_flight -= 1
            self._set_in_flight()
        m = self.metrics
        if m is not None:
            if error is not None:
                m.errors.labels(self.name, KIND_INTERNAL).inc()
            elif reason == FINISH_CANCELLED:
                m.errors.labels(self.name, KIND_DISCONNECTED).inc()
            else:
                now = time.perf_counter()
                labels = (self.name, self.version)
                m.duration.labels(*labels).observe(now - r.submitted)
                m.input_tokens.labels(*labels).observe(len(r.ids))
                m.output_tokens.labels(*labels).observe(len(r.generated))
                if r.first_token_at is not None and len(r.generated) > 1 and now > r.first_token_at:
                    m.tokens_per_second.labels(*labels).observe(
                        (len(r.generated) - 1) / (now - r.first_token_at)
                    )
        r.emit(("error", error) if error is not None else ("done", r.finish_reason))


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config):
        v = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, list | tuple):
            ids.update(int(x) for x in v)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _generator(seed: int | None, device: str) -> Any:
    import torch

    g = torch.Generator(device=device)
    if seed is not None:
        g.manual_seed(seed)
    else:
        g.seed()
    return g


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins one of ``stops`` (0 if none): text not to send
    yet, since the next tokens may complete the stop string, which is never part of the answer."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
