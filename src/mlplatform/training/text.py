"""The demo text model: a small T5 summarizer trained locally on generated news-like articles.

Nothing is downloaded: the articles and their one-line summaries come from templates
(:func:`generate_articles`), the tokenizer is a byte-pair encoding trained on them with the
``tokenizers`` library and wrapped as a :class:`transformers.PreTrainedTokenizerFast`, and the
model is a ``T5ForConditionalGeneration`` built from a small :class:`transformers.T5Config`.

* :func:`build_text_model` writes a directory that ``AutoTokenizer`` / ``AutoModelForSeq2SeqLM``
  load (``save_pretrained`` layout); ``train_seconds=0`` gives an untrained model in a few
  seconds (what tests use), the demo trains for up to two minutes on a CPU.
* :func:`log_and_register_text_model` logs that directory with MLflow's ``transformers`` flavour
  (task ``text2text-generation``) and registers it, alias ``champion`` by default.
* :func:`run_text_training` is what ``mlplatform train`` calls: registers ``summarizer@champion``.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Registered name of the demo summarizer.
SUMMARIZER_MODEL_NAME = "summarizer"
#: MLflow pipeline task the summarizer is logged with.
TEXT_TASK = "text2text-generation"
#: Context length of the demo tokenizer/model (tokens of input text, end-of-sequence included).
CONTEXT_LENGTH = 512
#: Default number of generated tokens (the model's generation config).
DEFAULT_MAX_NEW_TOKENS = 32

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

_CITIES = [
    "Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Denver", "Lyon", "Porto", "Dublin", "Quito",
    "Hanoi", "Perth", "Tunis", "Riga", "Seville", "Austin", "Krakow", "Accra", "Leeds", "Manila",
]  # fmt: skip
_COMPANIES = [
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell",
    "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Oscorp", "Aperture", "Massive", "Nakatomi",
]  # fmt: skip
_ACTIONS = [
    ("open", "stores"), ("build", "factories"), ("hire", "engineers"), ("close", "offices"),
    ("launch", "products"), ("buy", "startups"), ("cut", "jobs"), ("add", "flights"),
    ("test", "robots"), ("plant", "trees"),
]  # fmt: skip
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
_FILLER = [
    "Analysts said the move had been expected for several months .",
    "The plan still needs the approval of local regulators .",
    "Shares of the company rose {p} percent in early trading .",
    "A spokesperson declined to give further details .",
    "Competitors are expected to respond before the end of the year .",
    "The announcement came after a strong quarter for the whole sector .",
    "Local officials welcomed the news and promised support .",
    "Critics warned that the costs could be higher than planned .",
    "The company has been growing quickly in the region .",
    "Workers unions asked for talks about the details of the plan .",
]


@dataclass(frozen=True)
class Article:
    """One generated training example: the article text and its reference summary."""

    text: str
    summary: str


def generate_articles(n: int, seed: int = 0, *, filler_sentences: tuple[int, int] = (1, 5)) -> list[Article]:
    """``n`` templated news articles with one-line summaries (deterministic for a seed).

    The summary names the company, the action, the count and the city the article reports, so a
    model has to copy entities from the input: a small task a tiny model learns in minutes.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city, company, day = rng.choice(_CITIES), rng.choice(_COMPANIES), rng.choice(_DAYS)
        verb, obj = rng.choice(_ACTIONS)
        count = rng.randint(2, 99)
        lead = f"{city} , {day} . {company} said on {day} that it will {verb} {count} {obj} in {city} ."
        k = rng.randint(*filler_sentences)
        filler = [s.format(p=rng.randint(1, 15)) for s in rng.sample(_FILLER * 4, k)]
        body = [lead, *filler]
        if rng.random() < 0.5:
            body.insert(rng.randint(1, len(body)), f"{company} employs people in {rng.choice(_CITIES)} .")
        out.append(Article(text=" ".join(body), summary=f"{company} to {verb} {count} {obj} in {city}"))
    return out


def article_of_tokens(tokenizer: Any, n_tokens: int, seed: int = 0) -> str:
    """A generated article of about ``n_tokens`` tokens (for benchmarks): filler appended until long enough."""
    rng = random.Random(seed)
    text = generate_articles(1, seed)[0].text
    while len(tokenizer(text)["input_ids"]) < n_tokens:
        text += " " + rng.choice(_FILLER).format(p=rng.randint(1, 15))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: n_tokens - 1]
    return str(tokenizer.decode(ids))


def train_tokenizer(texts: list[str], vocab_size: int = 1200) -> Any:
    """A byte-pair-encoding tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    T5's conventions: ``<pad>`` = 0 (also the decoder start token), ``</s>`` = 1 appended to every
    sequence, ``<unk>`` = 2; a SentencePiece-style ``▁`` word boundary so decoding restores spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=CONTEXT_LENGTH,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def build_text_model(
    out_dir: Path,
    *,
    train_seconds: float = 0,
    seed: int = 0,
    steps: int | None = None,
    threads: int | None = 2,
    batch_size: int = 16,
) -> Path:
    """Build the demo summarizer into ``out_dir`` (``save_pretrained`` layout) and return it.

    ``train_seconds`` bounds training by wall-clock time, ``steps`` by optimizer steps (whichever
    ends first; both ``0``/``None``: untrained, random weights that never end a sequence before
    ``max_tokens``, a few seconds). ``threads`` caps torch's intra-op threads while training (the
    machine is shared).
    """
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    articles = generate_articles(4000, seed)
    tokenizer = train_tokenizer([a.text for a in articles] + [a.summary for a in articles])
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=128,
        d_kv=32,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        n_positions=CONTEXT_LENGTH,
    )
    model = T5ForConditionalGeneration(config)
    if not (train_seconds > 0 or steps):
        # Untrained (tests): random weights often pick a special token (end of sequence, padding) at
        # every step and answer nothing; zero special-token embeddings (tied output layer: logit 0)
        # make it write words until max_tokens.
        with torch.no_grad():
            for tid in tokenizer.all_special_ids:
                model.shared.weight[tid].zero_()
    else:
        prev_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            _train(
                model,
                tokenizer,
                articles,
                train_seconds=train_seconds,
                steps=steps,
                seed=seed,
                batch_size=batch_size,
            )
        finally:
            torch.set_num_threads(prev_threads)
    model.eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _train(
    model: Any,
    tokenizer: Any,
    articles: list[Article],
    *,
    train_seconds: float,
    steps: int | None,
    seed: int,
    batch_size: int,
) -> int:
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    deadline = time.monotonic() + train_seconds if train_seconds > 0 else float("inf")
    max_steps = steps if steps else 10**9
    step = 0
    while step < max_steps and time.monotonic() < deadline:
        batch = rng.sample(articles, batch_size)
        enc = tokenizer([a.text for a in batch], padding=True, return_tensors="pt")
        labels = tokenizer([a.summary for a in batch], padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    model.train(False)
    return step


#: Held-out articles in drift detection's reference for the summarizer (``reference/reference.parquet``).
REFERENCE_ROWS = 500


def text_reference(n: int = REFERENCE_ROWS, seed: int = 1_000_003) -> Any:
    """Drift detection's reference (a DataFrame): held-out generated articles (``text_input``) and their
    summaries (``text_output``; the templates' summaries, not the model's: generating 500 would take
    minutes on a CPU)."""
    import pandas as pd

    articles = generate_articles(n, seed)
    return pd.DataFrame(
        {"text_input": [a.text for a in articles], "text_output": [a.summary for a in articles]}
    )


def log_and_register_text_model(
    model_dir: Path,
    tracking_uri: str,
    *,
    name: str = SUMMARIZER_MODEL_NAME,
    alias: str = "champion",
    experiment: str = "text-models",
    params: dict[str, Any] | None = None,
) -> str:
    """Log ``model_dir`` with MLflow's ``transformers`` flavour (text2text-generation), register it as
    ``name``, point ``alias`` at the new version and return the version."""
    import mlflow
    import mlflow.transformers
    import transformers
    from mlflow.models import infer_signature

    from mlplatform.core.registry import mlflow_client
    from mlplatform.training.pipeline import mlflow_uri

    client = mlflow_client(tracking_uri)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    pipe = transformers.pipeline(TEXT_TASK, model=model, tokenizer=tokenizer, device="cpu")
    example = generate_articles(1, 123)[0]
    signature = infer_signature([example.text], [example.summary])
    with mlflow_uri(tracking_uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if tracking_uri.startswith("sqlite:"):
                db = Path(tracking_uri.removeprefix("sqlite:///"))
                location = (db.parent / "artifacts").resolve().as_uri()
            exp_id = client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-{int(time.time())}"):
            if params:
                mlflow.log_params(params)
            mlflow.set_tags({"mlplatform.model": name})
            with tempfile.TemporaryDirectory() as tmp:  # drift detection's reference, as for tabular models
                reference = Path(tmp) / "reference.parquet"
                text_reference().to_parquet(reference, index=False)
                mlflow.log_artifact(str(reference), artifact_path="reference")
            info = mlflow.transformers.log_model(
                transformers_model=pipe,
                name="model",
                task=TEXT_TASK,
                signature=signature,
                registered_model_name=name,
                inference_config={"max_new_tokens": DEFAULT_MAX_NEW_TOKENS},
                pip_requirements=[
                    f"transformers=={transformers.__version__}",
                    f"torch=={_torch_version()}",
                ],
            )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    return version


def _torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]


def run_text_training(
    tracking_uri: str, *, train_seconds: float = 100, seed: int = 0, force: bool = False
) -> dict[str, Any]:
    """Build, train (``train_seconds``) and register ``summarizer@champion``; skipped when it exists."""
    from mlplatform.core.registry import mlflow_client
    from mlplatform.training.pipeline import alias_version

    client = mlflow_client(tracking_uri)
    if not force:
        existing = alias_version(client, SUMMARIZER_MODEL_NAME, "champion")
        if existing is not None:
            return {"skipped": True, "version": str(existing.version)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        path = build_text_model(Path(tmp) / "summarizer", train_seconds=train_seconds, seed=seed)
        trained = time.monotonic() - t0
        version = log_and_register_text_model(
            path, tracking_uri, params={"train_seconds": train_seconds, "seed": seed}
        )
    return {"skipped": False, "version": version, "build_seconds": round(trained, 1)}
