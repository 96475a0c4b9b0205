"""A tiny T5 whose output is decided by one input token, for the text explanation tests.

The task: a sentence of filler words with one colour word somewhere; the target is that colour
(``none`` for the sentences without one). Filler words are sometimes replaced by SHAP's mask text
``...`` in training, so the model has seen masked inputs and its answer rests on the colour word
alone. A few seconds of training on one CPU
thread make it exact; it is saved in the ``save_pretrained`` layout the demo builder
(:func:`mlplatform.training.text.build_text_model`) writes, so it is registered the same way.
"""

from __future__ import annotations

import random
from pathlib import Path

KEYWORDS = ["red", "green", "blue", "amber"]
FILLER = ["the", "a", "cat", "dog", "sat", "on", "mat", "and", "then", "ran", "far", "away", "big", "old"]
MASK = "..."
NONE = "none"


def _sentence(rng: random.Random, mask_share: float) -> tuple[str, str]:
    words = [rng.choice(FILLER) if rng.random() >= mask_share else MASK for _ in range(rng.randint(3, 12))]
    if rng.random() < 0.2:
        return " ".join(words), NONE
    key = rng.choice(KEYWORDS)
    words.insert(rng.randint(0, len(words)), key)
    return " ".join(words), key


def build_keyword_model(out_dir: Path, *, steps: int = 80, seed: int = 0) -> Path:
    """Train the keyword-copying T5 (word-level tokenizer, T5 special-token conventions) into ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import GenerationConfig, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, MASK: 3}
    for w in [*KEYWORDS, NONE, *FILLER]:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine
    try:
        model.train()
        for _ in range(steps):
            batch = [_sentence(rng, 0.3) for _ in range(32)]
            enc = tokenizer([x for x, _ in batch], padding=True, return_tensors="pt")
            labels = tokenizer([k for _, k in batch], return_tensors="pt")["input_ids"]
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, max_new_tokens=4
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_gpt2(out_dir: Path, *, seed: int = 0) -> Path:
    """An untrained one-layer GPT-2 (causal LM, text-generation) over the same words, for the decoder-only path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    vocab = {w: i for i, w in enumerate([eos, MASK, *KEYWORDS, *FILLER])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=eos))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        bos_token=eos,
        unk_token=eos,
        model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # never end at once (logit 0 for end-of-text): every answer has tokens
        model.transformer.wte.weight[0].zero_()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def register_text_generation(model_dir: Path, tracking_uri: str, name: str) -> str:
    """Log a causal LM directory with MLflow's transformers flavour (task text-generation), alias champion."""
    import mlflow
    import mlflow.transformers
    import transformers

    from mlplatform.core.registry import mlflow_client
    from mlplatform.training.pipeline import mlflow_uri

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name("explain-text-tests")
    if exp is None:  # artifacts beside the SQLite file, not in the working directory
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
        exp_id = client.create_experiment("explain-text-tests", artifact_location=location)
    else:
        exp_id = exp.experiment_id
    with mlflow_uri(tracking_uri), mlflow.start_run(experiment_id=exp_id, run_name=name):
        info = mlflow.transformers.log_model(
            transformers_model=pipe,
            name="model",
            task="text-generation",
            registered_model_name=name,
            pip_requirements=[f"transformers=={transformers.__version__}", "torch"],
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "champion", version)
    return version
