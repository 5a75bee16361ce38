"""Built-in scorers that bundles can name in their manifest.

A bundle names its scorer by a registry key, never by an import path, so
loading a downloaded bundle never imports code that the bundle chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from tsdpo.evaluate import Scorer


class WorldScorer:
    """Exact scorers of the synthetic demo world.

    Each evaluation example contains the world task under "task"; helpfulness
    comes from its ground truth and verbosity is the response length in words.
    """

    name = "tsdpo-world"
    description = "demo world: helpfulness in [0, 1] from the ground-truth answer; verbosity in words"

    def score(self, example: Mapping[str, Any], response: str) -> dict[str, float]:
        from tsdpo.world.scorers import score_helpfulness, score_verbosity
        from tsdpo.world.build import task_from_dict

        task = task_from_dict(example["task"])
        return {"helpfulness": score_helpfulness(task, response), "verbosity": score_verbosity(response)}


class RewardModelScorer:
    """Helpfulness from a reward model's sequence-classification head, verbosity from length.

    Multi-attribute reward models (one output per attribute, as trained on
    HelpSteer) are read at one head, chosen by index or by the label name in
    the model config's id2label. Verbosity is the response length in words or
    in tokens of the reward model's tokenizer.
    """

    def __init__(
        self,
        model,
        tokenizer,
        attribute: int | str = 0,
        verbosity_unit: Literal["words", "tokens"] = "words",
        name: str = "reward-model",
        batch_size: int = 8,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = self._head_index(attribute)
        if verbosity_unit not in ("words", "tokens"):
            raise ValueError(f"verbosity_unit={verbosity_unit!r} must be 'words' or 'tokens'")
        self.verbosity_unit = verbosity_unit
        self.batch_size = batch_size
        label = self.model.config.id2label.get(self.index, str(self.index))
        self.name = name
        self.description = (
            f"helpfulness: {name} head {self.index} ({label}); verbosity: response length in {verbosity_unit}"
        )

    def _head_index(self, attribute: int | str) -> int:
        labels = {str(v): int(k) for k, v in self.model.config.id2label.items()}
        heads = self.model.config.num_labels
        if isinstance(attribute, str) and not attribute.isdigit():
            if attribute not in labels:
                raise ValueError(f"reward head {attribute!r} not found; the model's heads are {sorted(labels)}")
            return labels[attribute]
        index = int(attribute)
        if not 0 <= index < heads:
            raise ValueError(f"reward head index {index} is out of range; the model has {heads} heads")
        return index

    def _text(self, prompt: str, response: str) -> str:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{prompt}\n\n{response}"

    def length(self, response: str) -> float:
        if self.verbosity_unit == "tokens":
            return float(len(self.tokenizer(response, add_special_tokens=False)["input_ids"]))
        return float(len(response.split()))

    @torch.no_grad()
    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Reward-head outputs for (prompt, response) pairs, in batches."""
        values: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self._text(p, r) for p, r in zip(prompts[start : start + self.batch_size],
                                                       responses[start : start + self.batch_size])]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            logits = self.model(**batch.to(self.model.device)).logits  # (batch, num_labels)
            values.extend(logits[:, self.index].float().tolist())
        return values

    def score(self, example: Mapping[str, Any], response: str) -> dict[str, float]:
        return self.score_batch([example], [response])[0]

    def score_batch(self, examples: Sequence[Mapping[str, Any]], responses: Sequence[str]) -> list[dict[str, float]]:
        rewards = self.rewards([e["prompt"] for e in examples], responses)
        return [{"helpfulness": h, "verbosity": self.length(r)} for h, r in zip(rewards, responses)]


def load_reward_scorer(
    name_or_path: str,
    revision: str | None = None,
    attribute: int | str = 0,
    verbosity_unit: Literal["words", "tokens"] = "words",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> RewardModelScorer:
    """Load a sequence-classification reward model by Hub id or folder.

    Some multi-attribute reward models ship their own head code; they load
    only with `trust_remote_code=True`, which runs that code.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **common).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return RewardModelScorer(model, tokenizer, attribute, verbosity_unit, name=f"{name_or_path}@{revision or 'main'}")


SCORERS: dict[str, Callable[[], Scorer]] = {WorldScorer.name: WorldScorer}


def get_scorer(name: str) -> Scorer:
    """Return a new instance of the scorer registered under `name`."""
    if name not in SCORERS:
        raise ValueError(f"scorer {name!r} is not built in; known scorers: {sorted(SCORERS)}")
    return SCORERS[name]()
