"""Pretrain a small Llama-architecture base model on world conversations.

The model learns the world's response style at mixed helpfulness and
verbosity levels, which gives preference optimization something to steer.
Training uses AdamW with linear warmup and cosine decay. The loss covers
assistant tokens only (the response and its closing `<|end|>`), because
preference optimization and evaluation only score responses and the model
never has to write questions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
)

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Batches are formed within chunks of this many batches sorted by length,
# which keeps padding low while the batch order stays random.
LENGTH_GROUP_BATCHES = 64


@dataclass
class PretrainConfig:
    """Model shape and optimization settings for `pretrain_base_model`."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 512
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    # Maximum tokens per conversation, and the model's max_position_embeddings.
    seq_len: int = 128
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "intermediate_size", "steps", "batch_size", "seq_len", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PretrainConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"PretrainConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "pick n_heads that divides d_model"
            )
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"PretrainConfig.warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"PretrainConfig.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"PretrainConfig.weight_decay must be non-negative, got {self.weight_decay}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"PretrainConfig.max_grad_norm must be positive, got {self.max_grad_norm}")


def build_model(tokenizer: PreTrainedTokenizerBase, config: PretrainConfig) -> LlamaForCausalLM:
    """Create a randomly initialized Llama model sized by `config`, seeded by `config.seed`.

    Input embeddings and output head are separate tensors
    (tie_word_embeddings=False), so the head can move independently of the
    embeddings, and parameter dicts for functional calls and tangent vectors
    contain no shared tensors.
    """
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.d_model,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.seq_len,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_config(model_config, attn_implementation="eager")
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[tuple[str, str]],
) -> list[tuple[list[int], list[int]]]:
    """Tokenize (question, response) conversations through the chat template.

    Returns one (input_ids, labels) pair per conversation. The labels copy
    the input ids on the assistant turn and are IGNORE_INDEX on the prompt.
    """
    prompts = tokenizer.apply_chat_template(
        [[{"role": "user", "content": question}] for question, _ in conversations],
        tokenize=False,
        add_generation_prompt=True,
    )
    fulls = tokenizer.apply_chat_template(
        [
            [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
            for question, response in conversations
        ],
        tokenize=False,
    )
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]

    examples = []
    for (question, _), prompt, input_ids in zip(conversations, prompt_ids, full_ids):
        # The prompt ends in a special token, which BPE never merges across,
        # so the prompt's tokens are a prefix of the conversation's tokens.
        if input_ids[: len(prompt)] != prompt:
            raise ValueError(f"the chat template's prompt tokens are not a prefix of the conversation for {question!r}")
        examples.append((input_ids, [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt) :]))
    return examples


def _encode_checked(
    conversations: Sequence[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
) -> list[tuple[list[int], list[int]]]:
    examples = encode_conversations(tokenizer, conversations)
    for index, (input_ids, _) in enumerate(examples):
        if len(input_ids) > seq_len:
            raise ValueError(
                f"conversation {index} has {len(input_ids)} tokens, more than seq_len={seq_len}; "
                "raise PretrainConfig.seq_len or shorten the conversation"
            )
    return examples


def _collate(examples: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Padding is masked out of attention and loss."""
    length = max(len(input_ids) for input_ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (ids, row_labels) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(row_labels)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _summed_token_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Return the summed next-token cross-entropy over labelled tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    loss_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, int((targets != IGNORE_INDEX).sum())


def _length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Yield index batches forever, one shuffled epoch after another.

    Each epoch shuffles the examples, sorts every chunk of
    LENGTH_GROUP_BATCHES batches by length, cuts it into batches and
    shuffles the batch order.
    """
    chunk = batch_size * LENGTH_GROUP_BATCHES
    while True:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(order), chunk):
            group = sorted(order[start : start + chunk], key=lengths.__getitem__)
            batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Group matrices and embeddings for weight decay, and norm weights without it."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain_base_model(
    conversations: Sequence[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    config: PretrainConfig,
    progress: bool = True,
) -> LlamaForCausalLM:
    """Train a new Llama model from scratch on (question, response) conversations.

    Each conversation is formatted by the tokenizer's chat template as a user
    turn and an assistant turn ending in `<|end|>`. Training runs
    `config.steps` steps of `config.batch_size` conversations and cycles
    through the conversations as often as needed, so with the default config
    76,800 conversations make exactly one epoch. Returns the model in eval
    mode on the CPU, with its generation config set to stop at `<|end|>`.
    """
    if not conversations:
        raise ValueError("conversations is empty; pass e.g. datasets.pretraining_conversations(...)")
    examples = _encode_checked(conversations, tokenizer, config.seq_len)
    model = build_model(tokenizer, config)
    n_parameters = sum(p.numel() for p in model.parameters())
    logger.info(
        "pretraining a %.2fM-parameter model on %d conversations for %d steps",
        n_parameters / 1e6, len(examples), config.steps,
    )  # fmt: skip

    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.95), eps=1e-8
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _length_grouped_batches([len(ids) for ids, _ in examples], config.batch_size, generator)
    # Each batch's summed loss is divided by the same constant, the expected
    # number of labelled tokens in a batch, so every token weighs the same.
    # Batches are grouped by length, and a per-batch mean would weigh a token
    # of a bare answer about 20 times more than one of a padded answer, which
    # biases the model toward short responses.
    labelled_per_example = sum(len(labels) - labels.count(IGNORE_INDEX) for _, labels in examples) / len(examples)
    loss_normalizer = config.batch_size * labelled_per_example

    model.train()
    smoothed_loss = math.nan
    bar = tqdm(range(config.steps), desc="pretrain", disable=not progress)
    for step in bar:
        batch = _collate([examples[i] for i in next(batches)], tokenizer.pad_token_id)
        loss_sum, n_tokens = _summed_token_loss(model, batch)
        (loss_sum / loss_normalizer).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        value = loss_sum.item() / n_tokens
        if not math.isfinite(value):
            raise RuntimeError(f"pretraining loss is {value} at step {step}; lower PretrainConfig.lr (now {config.lr})")
        smoothed_loss = value if math.isnan(smoothed_loss) else 0.95 * smoothed_loss + 0.05 * value
        bar.set_postfix(loss=f"{smoothed_loss:.3f}")
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            logger.info("step %d/%d: loss %.4f (smoothed %.4f)", step + 1, config.steps, value, smoothed_loss)

    return model.eval()


@torch.no_grad()
def conversation_loss(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[tuple[str, str]],
    batch_size: int = 64,
) -> float:
    """Return the mean cross-entropy per assistant token of `model` on `conversations`, in nats."""
    if not conversations:
        raise ValueError("conversations is empty; pass at least one (question, response) pair")
    examples = encode_conversations(tokenizer, conversations)
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = _collate(examples[start : start + batch_size], tokenizer.pad_token_id)
        loss_sum, n_tokens = _summed_token_loss(model, batch)
        total_loss += loss_sum.item()
        total_tokens += n_tokens
    return total_loss / total_tokens
