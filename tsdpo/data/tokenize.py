"""Tokenization of preference pairs: prompt and completion kept apart.

A pair becomes prompt ids followed by completion ids, and only the completion
is scored. The rules below make the sequences match the input the model
receives when it generates a response at inference:

- Prompt. With a chat template, the prompt is the template's rendering of the
  prompt turns plus the assistant header (add_generation_prompt=True). Special
  tokens such as BOS come from the template alone: the rendered text is
  encoded without the tokenizer's own special tokens, so a template that
  writes BOS text and a tokenizer that adds BOS still give one BOS. Control
  tokens that appear inside message text are encoded as plain text, through
  transformers' sanitize_control_tokens option.
  Without a chat template, the prompt is the tokenizer's leading special
  tokens (BOS, if it adds one) and the text, never its trailing ones (an EOS
  some tokenizers append). BOS text at the start of the prompt becomes the one
  BOS token. An empty prompt becomes BOS alone where there is one, so the
  first completion token can be scored.
- Completion. The text is encoded with special-token text read as plain
  characters, and exactly one end-of-turn token is appended (see
  `end_of_turn_id`). A completion that already ends with the end-of-turn or
  EOS text, as in data exported with the template applied, loses that text
  first.
- Truncation. The prompt keeps its BOS and its last tokens, where the question
  and the assistant header are. Each completion keeps its first tokens and
  then has no end-of-turn token, because the response goes on. A pair with a
  completion left with no scored token is dropped.

Where BOS doubles as a turn marker (SmolLM2 sets bos_token to <|im_start|>),
it recurs at each turn by the template's design.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tsdpo.data.pairs import PreferencePair

logger = logging.getLogger(__name__)

# Assistant message text rendered through the chat template to find what the template writes after it.
_PROBE_ANSWER = "probe answer text"


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair; each completion ends with one end-of-turn token unless truncated."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


def prompt_messages(prompt: str | Sequence[dict]) -> list[dict]:
    """Return the prompt as a chat message list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


def _encode_text(tokenizer, text: str) -> list[int]:
    """Encode text without adding special tokens and without parsing special-token text."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _input_ids(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template; older releases return the ids.
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the named special tokens and of every added token marked special."""
    ids = set(tokenizer.all_special_ids)
    ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def leading_special_ids(tokenizer) -> list[int]:
    """Return the ids the tokenizer puts before plain text, e.g. [BOS] for Llama, [] for GPT-2."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def end_of_turn_id(tokenizer) -> int:
    """Return the id of the token that ends an assistant turn.

    With a chat template, the template renders a user turn and an assistant
    answer, and the first special token written after the answer is the end of
    turn: <|im_end|> for ChatML (Qwen2, SmolLM2) and <|eot_id|> for Llama 3,
    even where eos_token is another token such as <|endoftext|> or
    <|end_of_text|>. Without a template, or when the template writes no special
    token after the answer, it is the tokenizer's EOS.
    """
    if getattr(tokenizer, "chat_template", None):
        found = _template_end_of_turn_id(tokenizer)
        if found is not None:
            return found
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before tokenizing pairs")
    return tokenizer.eos_token_id


def _template_end_of_turn_id(tokenizer) -> int | None:
    from jinja2 import TemplateError  # transformers renders chat templates with jinja2

    messages = [{"role": "user", "content": "probe question"}, {"role": "assistant", "content": _PROBE_ANSWER}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    except TemplateError as err:
        logger.warning("the chat template failed on a user/assistant exchange (%s); using the EOS as end of turn", err)
        return None
    if not isinstance(rendered, str) or _PROBE_ANSWER not in rendered:
        logger.warning("the chat template changed the probe assistant message text; using the EOS as end of turn")
        return None

    tail = rendered[rendered.rindex(_PROBE_ANSWER) + len(_PROBE_ANSWER) :]
    special = special_token_ids(tokenizer)
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return token_id
    return None


def encode_prompt(tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """Encode a prompt up to where the assistant's answer starts (rules in the module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        # NOTE: transformers releases without sanitize_control_tokens pass it to the template as an
        # unused variable, so there control-token text inside messages still becomes tokens.
        encoded = tokenizer.apply_chat_template(
            prompt_messages(prompt), add_generation_prompt=True, tokenize=True, sanitize_control_tokens=True
        )
        return _input_ids(encoded)
    if not isinstance(prompt, str):
        raise ValueError("a message-list prompt needs a tokenizer with a chat template; pass the prompt as text")

    text = prompt
    has_bos_text = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    if has_bos_text:
        text = text[len(tokenizer.bos_token) :]
    ids = leading_special_ids(tokenizer) + _encode_text(tokenizer, text)

    # BOS text in the data, or an empty prompt, gets one BOS even where the tokenizer adds none.
    bos = tokenizer.bos_token_id
    if (has_bos_text or not ids) and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def strip_end_markers(text: str, markers: Sequence[str | None]) -> str:
    """Remove end-of-turn or EOS text (and the whitespace around it) from the end of a completion."""
    stripped = text.rstrip()
    removed = False
    found = True
    while found:
        found = False
        for marker in markers:
            if marker and stripped.endswith(marker):
                stripped = stripped[: -len(marker)].rstrip()
                removed = found = True
    return stripped if removed else text


def encode_completion(tokenizer, completion: str, end_of_turn: int | None = None) -> list[int]:
    """Encode a completion and append exactly one end-of-turn token.

    `end_of_turn` defaults to `end_of_turn_id(tokenizer)`; pass it when
    encoding many completions to render the template once.
    """
    if end_of_turn is None:
        end_of_turn = end_of_turn_id(tokenizer)
    markers = (tokenizer.convert_ids_to_tokens(end_of_turn), tokenizer.eos_token)
    return _encode_text(tokenizer, strip_end_markers(completion, markers)) + [end_of_turn]


def truncate_prompt(prompt_ids: Sequence[int], max_prompt_length: int, bos_token_id: int | None) -> list[int]:
    """Keep a leading BOS and the last tokens of the prompt, `max_prompt_length` in all."""
    if len(prompt_ids) <= max_prompt_length:
        return list(prompt_ids)
    keep_bos = 1 if bos_token_id is not None and prompt_ids[0] == bos_token_id else 0
    tail = max_prompt_length - keep_bos
    return list(prompt_ids[:keep_bos]) + list(prompt_ids[len(prompt_ids) - tail :])


def scored_token_count(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> int:
    """Count the completion tokens that get a log-prob: a sequence's first token has no prefix to predict it."""
    return len(completion_ids) if prompt_ids else max(len(completion_ids) - 1, 0)


def tokenize_pair(
    tokenizer, pair: PreferencePair, max_length: int, max_prompt_length: int, end_of_turn: int | None = None
) -> TokenizedPair | None:
    """Tokenize one pair, or return None when truncation leaves a completion with no scored token.

    The prompt is cut to `max_prompt_length` tokens and each completion to the
    rest of `max_length`.
    """
    if end_of_turn is None:
        end_of_turn = end_of_turn_id(tokenizer)
    prompt_ids = truncate_prompt(encode_prompt(tokenizer, pair.prompt), max_prompt_length, tokenizer.bos_token_id)
    budget = max(max_length - len(prompt_ids), 0)
    chosen_ids = encode_completion(tokenizer, pair.chosen, end_of_turn)[:budget]
    rejected_ids = encode_completion(tokenizer, pair.rejected, end_of_turn)[:budget]
    if scored_token_count(prompt_ids, chosen_ids) == 0 or scored_token_count(prompt_ids, rejected_ids) == 0:
        return None
    return TokenizedPair(tuple(prompt_ids), tuple(chosen_ids), tuple(rejected_ids))


def tokenize_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_length: int = 256, max_prompt_length: int = 128
) -> list[TokenizedPair]:
    """Tokenize pairs, dropping (with one warning) those left with no scored tokens."""
    if not 1 <= max_prompt_length < max_length:
        raise ValueError(
            f"max_prompt_length={max_prompt_length} must be at least 1 and below max_length={max_length}, "
            f"so that completions keep at least one token"
        )
    end_of_turn = end_of_turn_id(tokenizer)
    tokenized = [tokenize_pair(tokenizer, pair, max_length, max_prompt_length, end_of_turn) for pair in pairs]
    scorable = [t for t in tokenized if t is not None]
    dropped = len(tokenized) - len(scorable)
    if dropped:
        logger.warning(
            "dropped %d of %d pairs whose chosen or rejected completion has no scored token after truncation; "
            "raise max_length or give those prompts text",
            dropped,
            len(pairs),
        )
    return scorable


def collate_pairs(batch: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """Stack chosen then rejected sequences into one right-padded batch.

    Returns input_ids, attention_mask and completion_mask, each of shape
    (2 * batch, max_len): rows [0, batch) are prompt + chosen and rows
    [batch, 2 * batch) are prompt + rejected. The completion mask marks the
    scored tokens by position, so a pad id equal to the EOS id is harmless.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch; pass at least one TokenizedPair")
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
