"""Tiny models and a tiny tokenizer built from configs, so tests run offline in seconds."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# The suite never reaches the Hub: huggingface_hub reads these at import time, so they
# are set before anything imports it. HF_HOME points at an empty cache that tests fill.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="tsdpo-hf-home-"))

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB_SIZE = 300  # covers the 256 byte-level symbols, 4 special tokens and some merges

CORPUS = [
    "What is two plus three? Two plus three is five.",
    "Name the capital of France. The capital of France is Paris.",
    "How many letters are in cat? There are three letters in cat.",
    "Thanks for asking! I am happy to help you with that question today.",
    "I am not sure I can help with that.",
] * 4


def tiny_llama(tie_word_embeddings: bool = False, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int = VOCAB_SIZE, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        attn_implementation="eager",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a chat template, trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|end|>")
    wrapped.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return wrapped


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(params=["llama", "gpt2"])
def model(request) -> torch.nn.Module:
    return tiny_llama() if request.param == "llama" else tiny_gpt2()


def make_tiny_bundle(directory: Path, scale: float = 0.05) -> Path:
    """Write a complete bundle: tiny Llama base, two random vectors and a measured 3 × 3 grid."""
    from tsdpo.bundle import PARETO_NAME, write_bundle
    from tsdpo.compose import SteerableModel
    from tsdpo.evaluate import evaluate_grid, measure, summarize
    from tsdpo.generation import DecodingConfig
    from tsdpo.tangent import select_parameters
    from tsdpo.vectors import TangentVector

    model = tiny_llama()
    tokenizer = build_tokenizer()
    model.save_pretrained(directory / "base")
    tokenizer.save_pretrained(directory / "base")

    params = select_parameters(model)
    vectors = {}
    for seed, objective in enumerate(["helpfulness", "verbosity"]):
        generator = torch.Generator().manual_seed(100 + seed)
        tensors = {n: torch.randn(p.shape, generator=generator) * scale for n, p in params.items()}
        vectors[objective] = TangentVector(tensors, {"objective": objective})
    write_bundle(directory, {"path": "base"}, vectors, descriptions={"helpfulness": "correct answers"})

    # A stand-in scorer: helpfulness is the share of responses with the letter e, verbosity their length.
    class LetterScorer:
        name, description = "letters", "test scorer"

        def score(self, example, response):
            return {"helpfulness": float("e" in response), "verbosity": float(len(response.split()))}

    steerable = SteerableModel(model, vectors)
    examples = [{"prompt": p} for p in ("What is two plus three?", "Name the capital of France.")]
    axes = {"helpfulness": [-1.0, 0.5, 2.0], "verbosity": [-1.0, 0.5, 2.0]}
    decoding = DecodingConfig(max_new_tokens=8)
    grid = evaluate_grid(lambda w: measure(steerable, tokenizer, examples, LetterScorer(), w, "tangent", decoding),
                         axes, progress=False)
    base = measure(steerable, tokenizer, examples, LetterScorer(), {}, "tangent", decoding)
    pareto = summarize(grid, axes, [{"name": "scalarized DPO w=0.5", "w": 0.5, **base}], base, mode="tangent",
                       eval_prompts=len(examples), decoding={"max_new_tokens": 8})
    (directory / PARETO_NAME).write_text(json.dumps(pareto))
    return directory


@pytest.fixture(scope="session")
def tiny_bundle_template(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle-template"))


@pytest.fixture
def tiny_bundle(tiny_bundle_template, tmp_path) -> Path:
    """A private copy of the tiny bundle, free for a test to damage."""
    return Path(shutil.copytree(tiny_bundle_template, tmp_path / "bundle"))
