"""Incremental decoding for both inference modes: greedy or sampled, streamed, cancellable."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tsdpo.compose import Mode, SteerableModel
from tsdpo.data.tokenize import encode_prompt, end_of_turn_id


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding settings; greedy unless `do_sample` is set."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be positive; use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


def choose_next_token(logits: Tensor, config: DecodingConfig, generator: torch.Generator | None) -> Tensor:
    """Pick one token per row from next-token logits (batch, vocab); returns (batch,)."""
    if not config.do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)  # (batch, vocab)
    if config.top_p < 1.0:
        # Nucleus sampling: keep the smallest set of tokens whose mass reaches top_p.
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists into input_ids and attention_mask, both (batch, max_len)."""
    max_len = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), max_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            input_ids[row, max_len - len(sequence) :] = torch.tensor(list(sequence))
            attention_mask[row, max_len - len(sequence) :] = 1
    return input_ids, attention_mask


def decode_tokens(
    steerable: SteerableModel,
    prompt_ids: Sequence[Sequence[int]],
    weights: Mapping[str, float],
    mode: Mode,
    config: DecodingConfig,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    stop_event: threading.Event | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (batch,), one decoding step at a time.

    Decoding stops at the model's context length (max_position_embeddings)
    even before `max_new_tokens`; a prompt that fills the context is rejected.

    `eos_token_id` is one id or several (EOS and an end-of-turn token that
    differs from it). Rows that have produced one keep receiving `pad_token_id`.
    Decoding ends when every row has finished, after `max_new_tokens`, or once `stop_event`
    is set. The stop check runs before every step, so a stop takes effect
    within one forward pass.
    """
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    # Positions past the model's context are out of its training range (and cost quadratic memory).
    context = getattr(steerable.model.config, "max_position_embeddings", None) if hasattr(steerable, "model") else None
    longest = max(len(ids) for ids in prompt_ids)
    if context is not None and longest >= context:
        raise ValueError(
            f"the prompt has {longest} tokens but the model's context is {context} tokens; shorten the prompt"
        )
    max_steps = config.max_new_tokens if context is None else min(config.max_new_tokens, context - longest)
    decoder = steerable.decoder(weights, mode)
    generator = torch.Generator().manual_seed(config.seed) if config.do_sample else None

    input_ids, attention_mask = left_pad(prompt_ids, pad_token_id)
    # Positions count real tokens only, so left padding does not shift them.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (batch, prompt_len)
    finished = torch.zeros(len(prompt_ids), dtype=torch.bool)
    stop_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))

    for _ in range(max_steps):
        if stop_event is not None and stop_event.is_set():
            return
        logits = decoder.forward(input_ids, attention_mask, position_ids)[:, -1, :]  # (batch, vocab)
        next_tokens = choose_next_token(logits, config, generator)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad_token_id), next_tokens)
        finished |= torch.isin(next_tokens, stop_ids)
        yield next_tokens

        if finished.all():
            return
        input_ids = next_tokens.unsqueeze(-1)  # (batch, 1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=-1)
        position_ids = position_ids[:, -1:] + 1


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the chat template's end-of-turn token, when that differs (for example <|eot_id|>)."""
    ids = [tokenizer.eos_token_id]
    end_of_turn = end_of_turn_id(tokenizer)
    if end_of_turn not in ids:
        ids.append(end_of_turn)
    return ids


def stream_text(
    steerable: SteerableModel,
    tokenizer,
    prompt: str,
    weights: Mapping[str, float],
    mode: Mode = "tangent",
    config: DecodingConfig = DecodingConfig(),
    stop_event: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the growing response text for one prompt, one token at a time."""
    if not prompt.strip():
        raise ValueError("the prompt is empty; type a question")
    prompt_ids = encode_prompt(tokenizer, prompt)
    tokens: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = stop_token_ids(tokenizer)
    for next_tokens in decode_tokens(steerable, [prompt_ids], weights, mode, config, stop_ids, pad, stop_event):
        token = int(next_tokens[0])
        if token in stop_ids:
            return
        tokens.append(token)
        yield tokenizer.decode(tokens, skip_special_tokens=True)


def generate_batch(
    steerable: SteerableModel,
    tokenizer,
    prompts: Sequence[str],
    weights: Mapping[str, float],
    mode: Mode = "tangent",
    config: DecodingConfig = DecodingConfig(),
    batch_size: int = 32,
    stop_event: threading.Event | None = None,
) -> list[str]:
    """Decode a response for each prompt, in batches; returns text without the EOS."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = stop_token_ids(tokenizer)
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [encode_prompt(tokenizer, prompt) for prompt in prompts[start : start + batch_size]]
        steps = list(
            decode_tokens(steerable, chunk, weights, mode, config, stop_ids, pad, stop_event)
        )
        generated = torch.stack(steps, dim=1) if steps else torch.zeros((len(chunk), 0), dtype=torch.long)
        for row in generated.tolist():
            ends = [i for i, token in enumerate(row) if token in stop_ids]
            if ends:
                row = row[: ends[0]]
            responses.append(tokenizer.decode(row, skip_special_tokens=True))
    return responses
