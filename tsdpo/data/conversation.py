"""Conversational rows: split message lists into a prompt and two completions.

Preference datasets store a completion either as text or as a message list in
the Hugging Face chat format. In the second form the list often repeats the
prompt turns, e.g. chosen = [{"role": "user", ...}, {"role": "assistant", ...}],
with or without a separate prompt column. Here the shared prompt turns are split
off and each completion becomes the text of its final assistant message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tsdpo.data.pairs import PreferencePair

Message = dict[str, str]


def to_messages(value: Sequence, where: str) -> list[Message]:
    """Validate a message list and keep only each message's role and content.

    Other keys (name, tool calls) are dropped, because the pairs carry text
    turns only. Raises ValueError when an item is not a role/content mapping
    with string content, naming `where` in the message.
    """
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(
                f"{where}: message {index} is {message!r}; each message must be a mapping "
                f"with 'role' and 'content' keys"
            )
        if not isinstance(message["content"], str):
            raise ValueError(
                f"{where}: message {index} has content of type {type(message['content']).__name__}; "
                f"only text content is supported, so flatten multimodal parts to a string first"
            )
        messages.append({"role": str(message["role"]), "content": message["content"]})
    return messages


def normalize_prompt(messages: list[Message], where: str) -> str | tuple[Message, ...]:
    """Return a lone user turn as its text and any longer prompt as a tuple of messages."""
    if not messages:
        raise ValueError(f"{where}: the prompt is empty; give a prompt column or prompt turns before the answer")
    if messages[-1]["role"] == "assistant":
        raise ValueError(
            f"{where}: the prompt ends with an assistant message; the last prompt turn must be "
            f"the one the completions answer, such as a user message"
        )
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return tuple(messages)


def completion_text(completion, prompt_messages: list[Message] | None, where: str) -> str:
    """Return the text of a completion given as text or as a message list.

    A message list may repeat the prompt turns before the answer; those are
    removed. What remains must be exactly one assistant message.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence):
        raise ValueError(f"{where} is of type {type(completion).__name__}; expected a string or a message list")

    messages = to_messages(completion, where)
    if prompt_messages and messages[: len(prompt_messages)] == prompt_messages:
        messages = messages[len(prompt_messages) :]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise ValueError(
            f"{where}: after the prompt turns the completion has roles {roles}; expected exactly one "
            f"assistant message, so multi-turn completions must be split before loading"
        )
    return messages[0]["content"]


def implicit_prompt(chosen: Sequence, rejected: Sequence, where: str) -> list[Message]:
    """Return the turns that chosen and rejected share before their final messages."""
    chosen_messages = to_messages(chosen, f"{where}, chosen")
    rejected_messages = to_messages(rejected, f"{where}, rejected")
    if chosen_messages[:-1] != rejected_messages[:-1]:
        raise ValueError(
            f"{where}: chosen and rejected differ before their final message, so the prompt is ambiguous; "
            f"add a 'prompt' column or make both lists share every turn except the last"
        )
    return chosen_messages[:-1]


def pair_from_fields(prompt, chosen, rejected, where: str) -> PreferencePair:
    """Build a pair from prompt/chosen/rejected fields in any supported form.

    `prompt` is text, a message list, or None when chosen and rejected are
    message lists that carry the prompt turns themselves (the "implicit prompt"
    layout of conversational preference datasets).
    """
    if prompt is None:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise ValueError(
                f"{where} has no prompt; add a 'prompt' column, or give chosen and rejected as "
                f"message lists that start with the prompt turns"
            )
        prompt_messages = implicit_prompt(chosen, rejected, where)
    elif isinstance(prompt, str):
        prompt_messages = [{"role": "user", "content": prompt}]
    else:
        prompt_messages = to_messages(prompt, f"{where}, prompt")

    return PreferencePair(
        prompt=normalize_prompt(prompt_messages, where),
        chosen=completion_text(chosen, prompt_messages, f"{where}, chosen"),
        rejected=completion_text(rejected, prompt_messages, f"{where}, rejected"),
    )
