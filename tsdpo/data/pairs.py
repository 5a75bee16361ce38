"""Preference pairs: the common currency between data loaders and trainers."""

from __future__ import annotations

from dataclasses import dataclass

# A message list in the Hugging Face chat format: [{"role": "user", "content": "..."}].
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: a prompt and two completions, the chosen one preferred.

    `prompt` is the user turn (plain text or a message list ending in a user
    message); `chosen` and `rejected` are assistant responses as plain text.
    """

    prompt: str | tuple
    chosen: str
    rejected: str

    def __post_init__(self) -> None:
        for field in ("chosen", "rejected"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise TypeError(f"PreferencePair.{field} must be a str, got {type(value).__name__}")
