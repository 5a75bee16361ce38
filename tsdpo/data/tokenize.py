"""Tokenization of preference pairs: prompt and completion kept apart.

A pair becomes prompt ids followed by completion ids. Only the completion is
scored, and it ends with exactly one end-of-sequence token. The prompt goes
through the tokenizer's chat template when it has one, so special tokens such
as BOS come from the template once, at position 0; the completion is encoded
without special tokens and the EOS is appended by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tsdpo.data.pairs import PreferencePair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair; each completion ends with one EOS unless truncated."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


def prompt_messages(prompt: str | Sequence[dict]) -> list[dict]:
    """Return the prompt as a chat message list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


def encode_prompt(tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """Encode a prompt up to where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding here; older releases return the ids.
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    if not isinstance(prompt, str):
        raise ValueError("a message-list prompt needs a tokenizer with a chat template; pass the prompt as text")
    return list(tokenizer(prompt)["input_ids"])


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Encode a completion without special tokens and append one EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before tokenizing pairs")
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int, max_prompt_length: int) -> TokenizedPair | None:
    """Tokenize one pair, or return None when truncation leaves nothing to score.

    The prompt keeps its last `max_prompt_length` tokens, because the end of a
    prompt holds the question and the assistant header. Each completion is then
    cut to fit `max_length`.
    """
    prompt_ids = encode_prompt(tokenizer, pair.prompt)[-max_prompt_length:]
    budget = max_length - len(prompt_ids)
    chosen_ids = encode_completion(tokenizer, pair.chosen)[: max(budget, 0)]
    rejected_ids = encode_completion(tokenizer, pair.rejected)[: max(budget, 0)]
    if not chosen_ids or not rejected_ids:
        return None
    return TokenizedPair(tuple(prompt_ids), tuple(chosen_ids), tuple(rejected_ids))


def tokenize_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_length: int = 256, max_prompt_length: int = 128
) -> list[TokenizedPair]:
    """Tokenize pairs, dropping (with one warning) those left with no scored tokens."""
    if max_prompt_length >= max_length:
        raise ValueError(
            f"max_prompt_length={max_prompt_length} must be below max_length={max_length} "
            f"so that completions keep at least one token"
        )
    tokenized = [tokenize_pair(tokenizer, pair, max_length, max_prompt_length) for pair in pairs]
    kept = [t for t in tokenized if t is not None]
    dropped = len(tokenized) - len(kept)
    if dropped:
        logger.warning("dropped %d of %d pairs with no completion tokens left after truncation", dropped, len(pairs))
    return kept


def collate_pairs(batch: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """Stack chosen then rejected sequences into one right-padded batch.

    Returns input_ids, attention_mask and completion_mask, each of shape
    (2 * batch, max_len): rows [0, batch) are prompt + chosen and rows
    [batch, 2 * batch) are prompt + rejected. The completion mask marks the
    scored tokens by position, so a pad id equal to the EOS id is harmless.
    """
    sequences = [p.prompt_ids + p.chosen_ids for p in batch] + [p.prompt_ids + p.rejected_ids for p in batch]
    prompt_lengths = [len(p.prompt_ids) for p in batch] * 2
    max_len = max(len(s) for s in sequences)

    input_ids = torch.full((len(sequences), max_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), max_len), dtype=torch.long)
    completion_mask = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for row, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        completion_mask[row, prompt_length : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
