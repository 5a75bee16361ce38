"""Seeded train/eval splits by prompt, so no evaluation prompt is seen in training."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from tsdpo.data.pairs import PreferencePair

Prompt = str | tuple


@dataclass(frozen=True)
class PairSplit:
    """Training pairs, evaluation pairs, and the distinct evaluation prompts."""

    train: list[PreferencePair]
    eval: list[PreferencePair]
    eval_prompts: list[Prompt]  # in order of first appearance in the input pairs


def prompt_key(prompt: Prompt) -> str:
    """Return a string that identifies a prompt, text or message tuple alike."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(list(prompt), sort_keys=True, ensure_ascii=False)


def eval_prompt_count(eval_size: float | int, prompt_count: int) -> int:
    """Turn `eval_size` (a fraction in [0, 1) or a count of prompts) into a count of prompts."""
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, float)):
        raise ValueError(f"eval_size={eval_size!r} must be a fraction such as 0.1 or a number of prompts such as 32")
    if isinstance(eval_size, float):
        if not 0 <= eval_size < 1:
            raise ValueError(f"eval_size={eval_size} as a fraction must be in [0, 1); pass an int for a prompt count")
        count = math.ceil(eval_size * prompt_count)
    else:
        count = eval_size
    if not 0 <= count < prompt_count:
        raise ValueError(
            f"eval_size={eval_size} asks for {count} evaluation prompts out of {prompt_count}; "
            f"at least one prompt must stay for training, so lower eval_size"
        )
    return count


def split_by_prompt(pairs: Sequence[PreferencePair], eval_size: float | int = 0.1, seed: int = 0) -> PairSplit:
    """Split pairs into train and eval by prompt, with a seeded shuffle of the distinct prompts.

    All pairs of one prompt land on the same side. A float `eval_size` is the
    fraction of prompts held out, rounded up; an int is their number. The
    result depends only on the pairs, their order, `eval_size` and `seed`,
    not on Python's hash seed. Pairs keep their input order on both sides.
    """
    if not pairs:
        raise ValueError("there are no pairs to split; check that the data source produced pairs")
    keys = list(dict.fromkeys(prompt_key(pair.prompt) for pair in pairs))  # distinct, first-appearance order
    count = eval_prompt_count(eval_size, len(keys))

    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    eval_keys = set(shuffled[:count])

    train = [pair for pair in pairs if prompt_key(pair.prompt) not in eval_keys]
    held_out = [pair for pair in pairs if prompt_key(pair.prompt) in eval_keys]
    eval_prompts = list({prompt_key(pair.prompt): pair.prompt for pair in held_out}.values())
    return PairSplit(train=train, eval=held_out, eval_prompts=eval_prompts)
