"""Training: one TS-DPO tangent vector per objective, and standard DPO for baselines.

TS-DPO optimizes Δ only, with θ0 frozen: policy logits are the linearized
f(x; θ0) + J·Δ and the reference log-probs come from the JVP's primal output,
so no second forward pass runs. Standard DPO trains all weights against a
frozen copy of the starting model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tsdpo.data.pairs import PreferencePair
from tsdpo.data.tokenize import TokenizedPair, collate_pairs, tokenize_pairs
from tsdpo.dpo import dpo_loss, sequence_logps, split_chosen_rejected
from tsdpo.tangent import linearized_logits, require_eager_attention, select_parameters
from tsdpo.vectors import TangentVector, save_vector

logger = logging.getLogger(__name__)

Schedule = Literal["cosine", "linear", "constant"]


@dataclass
class TrainConfig:
    """Settings of one DPO run; saved as JSON next to every vector it produces."""

    objective: str = "objective"  # name of the preference objective, e.g. "helpfulness"
    beta: float = 0.1  # DPO temperature: larger keeps the policy closer to the reference
    learning_rate: float = 1e-3
    steps: int = 100  # optimizer steps
    batch_size: int = 8  # pairs per micro-batch
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0  # linear warm-up from 0 to learning_rate over this many steps
    schedule: Schedule = "cosine"
    max_grad_norm: float = 1.0  # 0 disables clipping
    weight_decay: float = 0.0
    seed: int = 0
    max_length: int = 256  # tokens of prompt + completion
    max_prompt_length: int = 128
    # Regular expressions selecting the parameters that carry a tangent; None selects all.
    parameter_patterns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta} must be positive")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be positive")
        for name in ("steps", "batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be between 0 and steps={self.steps}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule={self.schedule!r} must be 'cosine', 'linear' or 'constant'")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm} must be >= 0 (0 disables clipping)")
        if self.parameter_patterns is not None:
            self.parameter_patterns = tuple(self.parameter_patterns)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def iterate_batches(pairs: Sequence[TokenizedPair], batch_size: int, seed: int) -> Iterator[list[TokenizedPair]]:
    """Yield shuffled batches forever, reshuffling each epoch with a seeded RNG."""
    if not pairs:
        raise ValueError("no training pairs left after tokenization; check the data and max_length")
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    while True:
        rng.shuffle(order)
        if len(order) <= batch_size:
            yield [pairs[i] for i in order]
            continue
        # The last incomplete batch of an epoch is dropped, so every step sees batch_size pairs.
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [pairs[i] for i in order[start : start + batch_size]]


def linearized_dpo_loss(
    model: nn.Module, primals: dict[str, Tensor], delta: dict[str, Tensor], batch: dict[str, Tensor], beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO loss of the linearized model θ0 + Δ against the base model θ0.

    One JVP gives both terms: the primal logits f(x; θ0) are the reference and
    f(x; θ0) + J·Δ is the policy.
    """
    primal_logits, tangent_logits = linearized_logits(
        model, primals, delta, batch["input_ids"], batch["attention_mask"]
    )  # each (2 * batch, seq, vocab)
    policy = sequence_logps(primal_logits.detach() + tangent_logits, batch["input_ids"], batch["completion_mask"])
    with torch.no_grad():
        reference = sequence_logps(primal_logits, batch["input_ids"], batch["completion_mask"])
    return dpo_loss(*split_chosen_rejected(policy), *split_chosen_rejected(reference), beta=beta)


def standard_dpo_loss(
    policy_model: nn.Module, reference_model: nn.Module, batch: dict[str, Tensor], beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO loss of a fully trainable policy against a frozen reference model."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    policy = sequence_logps(policy_model(**inputs).logits, batch["input_ids"], batch["completion_mask"])
    with torch.no_grad():
        reference = sequence_logps(reference_model(**inputs).logits, batch["input_ids"], batch["completion_mask"])
    return dpo_loss(*split_chosen_rejected(policy), *split_chosen_rejected(reference), beta=beta)


def run_optimization(
    loss_fn: Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]],
    parameters: list[Tensor],
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    config: TrainConfig,
    metrics_path: Path | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """AdamW with warm-up, a schedule, clipping and accumulation; returns per-step metrics.

    Each line of `metrics_path` (JSONL) contains one optimizer step's metrics,
    averaged over its micro-batches. Lines are flushed as they are written, so
    an interrupted run keeps the steps it finished.
    """
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, config))
    batches = iterate_batches(pairs, config.batch_size, config.seed)
    history: list[dict[str, float]] = []

    handle = open(metrics_path, "w") if metrics_path is not None else None
    try:
        bar = tqdm(range(config.steps), desc=f"DPO {config.objective}", disable=not progress)
        for step in bar:
            sums: dict[str, float] = {}
            for _ in range(config.gradient_accumulation_steps):
                batch = collate_pairs(next(batches), pad_token_id)
                loss, metrics = loss_fn(batch)
                (loss / config.gradient_accumulation_steps).backward()
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value) / config.gradient_accumulation_steps

            grad_norm = (
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                if config.max_grad_norm > 0
                else torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            record = {"step": step + 1, **sums, "grad_norm": float(grad_norm), "learning_rate": scheduler.get_last_lr()[0]}
            history.append(record)
            if handle is not None:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
            bar.set_postfix(loss=f"{sums['loss']:.4f}", acc=f"{sums['rewards/accuracies']:.2f}")
    finally:
        if handle is not None:
            handle.close()
    return history


def prepare_pairs(tokenizer, pairs: Sequence[PreferencePair], config: TrainConfig) -> tuple[list[TokenizedPair], int]:
    """Tokenize the pairs and return them with the pad id used for batching."""
    tokenized = tokenize_pairs(tokenizer, pairs, config.max_length, config.max_prompt_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return tokenized, pad


def train_tangent_vector(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[PreferencePair],
    config: TrainConfig,
    output_dir: str | Path | None = None,
    base_model_name: str = "",
    data_description: str = "",
    progress: bool = True,
) -> tuple[TangentVector, list[dict[str, float]]]:
    """Train Δ for one objective with TS-DPO; θ0 stays frozen.

    With `output_dir`, writes `<objective>.safetensors`, `<objective>.config.json`
    and `<objective>.metrics.jsonl` there.
    """
    require_eager_attention(model)
    torch.manual_seed(config.seed)
    model.eval()  # the linearization is taken at the deterministic model: no dropout
    model.requires_grad_(False)

    primals = select_parameters(model, config.parameter_patterns)
    # Δ starts at zero, where the linearized model equals the base model.
    delta = {name: torch.zeros_like(p, dtype=torch.float32, requires_grad=True) for name, p in primals.items()}
    tokenized, pad = prepare_pairs(tokenizer, pairs, config)

    paths = _artifact_paths(output_dir, config.objective)
    if paths:
        paths["config"].write_text(config.to_json())
    history = run_optimization(
        lambda batch: linearized_dpo_loss(model, primals, delta, batch, config.beta),
        list(delta.values()),
        tokenized,
        pad,
        config,
        metrics_path=paths.get("metrics"),
        progress=progress,
    )

    metadata = {
        "objective": config.objective,
        "base_model": base_model_name,
        "beta": str(config.beta),
        "steps": str(config.steps),
        "data": data_description,
        "pairs": str(len(tokenized)),
        "parameter_patterns": json.dumps(config.parameter_patterns),
    }
    vector = TangentVector({name: d.detach().clone() for name, d in delta.items()}, metadata)
    if paths:
        save_vector(vector, paths["vector"])
    return vector, history


def train_standard_dpo(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[PreferencePair],
    config: TrainConfig,
    output_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Fine-tune a copy of `model` with standard DPO; returns the trained copy.

    The reference is a frozen copy of `model` as given. Dropout is off in both,
    as in the linearized runs, so the two methods see the same deterministic model.
    """
    torch.manual_seed(config.seed)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    policy = copy.deepcopy(model).eval().requires_grad_(True)
    tokenized, pad = prepare_pairs(tokenizer, pairs, config)

    paths = _artifact_paths(output_dir, config.objective)
    if paths:
        paths["config"].write_text(config.to_json())
    history = run_optimization(
        lambda batch: standard_dpo_loss(policy, reference, batch, config.beta),
        [p for p in policy.parameters() if p.requires_grad],
        tokenized,
        pad,
        config,
        metrics_path=paths.get("metrics"),
        progress=progress,
    )
    return policy.requires_grad_(False), history


def _artifact_paths(output_dir: str | Path | None, objective: str) -> dict[str, Path]:
    if output_dir is None:
        return {}
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "vector": directory / f"{objective}.safetensors",
        "config": directory / f"{objective}.config.json",
        "metrics": directory / f"{objective}.metrics.jsonl",
    }
