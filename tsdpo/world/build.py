"""Build the embedded demo bundle from nothing: world, tokenizer, base model, vectors, baselines, evaluation.

Every stage is seeded, so the same configuration on the same machine builds
the same bundle. The bundle is written to a staging folder and moved into
place only when complete, so a failed build never leaves a half-written bundle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tsdpo.bundle import EVAL_SET_NAME, PARETO_NAME, read_manifest, write_bundle
from tsdpo.card import model_card
from tsdpo.compose import SteerableModel
from tsdpo.data.pairs import PreferencePair
from tsdpo.evaluate import evaluate_steering
from tsdpo.generation import DecodingConfig
from tsdpo.scorers import WorldScorer
from tsdpo.train import TrainConfig, train_standard_dpo, train_tangent_vector
from tsdpo.world.datasets import helpfulness_pairs, pretraining_conversations, verbosity_pairs
from tsdpo.world.pretrain import PretrainConfig, pretrain_base_model
from tsdpo.world.responses import HELPFULNESS_LEVELS, VERBOSITY_LEVELS, render_response
from tsdpo.world.scorers import score_helpfulness, score_verbosity
from tsdpo.world.tasks import Task, split_tasks
from tsdpo.world.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

# Verbosity is divided by this many words before scalarization, so that both
# objectives of w·helpfulness + (1 - w)·verbosity lie in [0, 1]; the most
# verbose world responses are about 50 words long.
VERBOSITY_SCALE_WORDS = 50.0


def _default_axis() -> list[float]:
    return [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]


@dataclass
class DemoBuildConfig:
    """Everything that determines the demo bundle; saved as build_config.json inside it."""

    seed: int = 0
    pretrain_conversations: int = 76800  # steps × batch size of the default PretrainConfig: one pass
    vocab_size: int = 1536
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    pairs_per_objective: int = 2000
    # Both methods share β and the learning rate, so baselines and vectors move the same distance per step.
    ts_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=100, batch_size=16, learning_rate=6e-4, warmup_steps=10, beta=0.1, max_length=160, max_prompt_length=48,
    ))
    baseline: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=100, batch_size=16, learning_rate=6e-4, warmup_steps=10, beta=0.1, max_length=160, max_prompt_length=48,
    ))
    baseline_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    eval_prompts: int = 128
    axis: list[float] = field(default_factory=_default_axis)  # weight values of each slider on the grid
    max_new_tokens: int = 80
    # Sampled, seeded decoding: greedy decoding of the base model collapses to its single most
    # likely answer, which hides the distribution shifts that DPO makes.
    temperature: float = 0.7

    def __post_init__(self) -> None:
        if isinstance(self.pretrain, dict):
            self.pretrain = PretrainConfig(**self.pretrain)
        for name in ("ts_dpo", "baseline"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, TrainConfig(**getattr(self, name)))
        if sorted(self.axis) != list(self.axis) or len(self.axis) < 2:
            raise ValueError(f"axis={self.axis} must be increasing with at least two values")
        if self.eval_prompts < 1:
            raise ValueError(f"eval_prompts={self.eval_prompts} must be at least 1")
        if not all(0.0 <= w <= 1.0 for w in self.baseline_weights):
            raise ValueError(f"baseline_weights={self.baseline_weights} must lie in [0, 1]")


def task_to_dict(task: Task) -> dict[str, Any]:
    return dataclasses.asdict(task)


def task_from_dict(data: dict[str, Any]) -> Task:
    """Rebuild a Task from its JSON form, where tuples became lists."""
    return Task(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def scalarized_score(task: Task, response: str, w: float) -> float:
    """w · helpfulness + (1 - w) · verbosity / VERBOSITY_SCALE_WORDS, verbosity capped at 1."""
    verbosity = min(score_verbosity(response) / VERBOSITY_SCALE_WORDS, 1.0)
    return w * score_helpfulness(task, response) + (1 - w) * verbosity


def scalarized_pairs(tasks: Sequence[Task], n: int, w: float, seed: int) -> list[PreferencePair]:
    """Pairs labelled by the scalarized score, the way scalarized DPO mixes objectives.

    Both responses are drawn at random helpfulness and verbosity levels; the
    one with the higher w-weighted score is chosen, and ties are redrawn.
    """
    rng = random.Random(seed)
    pairs: list[PreferencePair] = []
    while len(pairs) < n:
        task = rng.choice(tasks)
        responses = [
            render_response(task, rng.choice(HELPFULNESS_LEVELS), rng.randrange(len(VERBOSITY_LEVELS)), rng)
            for _ in range(2)
        ]
        scores = [scalarized_score(task, r, w) for r in responses]
        if abs(scores[0] - scores[1]) < 1e-9:
            continue
        chosen, rejected = (responses[0], responses[1]) if scores[0] > scores[1] else (responses[1], responses[0])
        pairs.append(PreferencePair(task.question, chosen, rejected))
    return pairs


def build_demo_bundle(output: str | Path, config: DemoBuildConfig | None = None, progress: bool = True) -> Path:
    """Run the whole pipeline and write the bundle to `output`, replacing any previous one."""
    config = config or DemoBuildConfig()
    output = Path(output)
    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        logger.info("demo build: %s", name)

    # 1. The world and its held-out evaluation prompts.
    stage("world")
    split = split_tasks(seed=config.seed)
    eval_tasks = random.Random(config.seed).sample(list(split.eval), min(config.eval_prompts, len(split.eval)))
    conversations = pretraining_conversations(split.train, config.pretrain_conversations, seed=config.seed)

    # 2. Tokenizer and base model, trained from scratch on the world's text.
    stage("tokenizer")
    texts = [f"{question} {response}" for question, response in conversations]
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size)
    stage("pretrain")
    torch.manual_seed(config.seed)
    model = pretrain_base_model(conversations, tokenizer, config.pretrain, progress=progress)
    model.save_pretrained(staging / "base")
    tokenizer.save_pretrained(staging / "base")

    # 3. One TS-DPO tangent vector per objective.
    pair_sets = {
        "helpfulness": helpfulness_pairs(split.train, config.pairs_per_objective, seed=config.seed + 1),
        "verbosity": verbosity_pairs(split.train, config.pairs_per_objective, seed=config.seed + 2),
    }
    vectors, training = {}, {}
    training_dir = staging / "training"
    for objective, pairs in pair_sets.items():
        stage(f"ts-dpo {objective}")
        train_config = dataclasses.replace(config.ts_dpo, objective=objective, seed=config.seed)
        vectors[objective], history = train_tangent_vector(
            model, tokenizer, pairs, train_config, training_dir, base_model_name="base (embedded demo model)",
            data_description=f"demo world {objective} pairs ({len(pairs)})", progress=progress,
        )
        training[objective] = {"config": dataclasses.asdict(train_config), "final_metrics": history[-1]}
        (training_dir / f"{objective}.safetensors").unlink()  # the bundle keeps the vector under vectors/

    # 4. Scalarized-DPO baselines, one full fine-tune per weight.
    baseline_models = {}
    for w in config.baseline_weights:
        stage(f"scalarized dpo w={w}")
        pairs = scalarized_pairs(split.train, config.pairs_per_objective, w, seed=config.seed + 3)
        baseline_config = dataclasses.replace(config.baseline, objective=f"scalarized_w{w}", seed=config.seed)
        baseline_models[w], _ = train_standard_dpo(model, tokenizer, pairs, baseline_config, training_dir, progress=progress)

    # 5. Evaluation: the weight grid in tangent mode, the baselines and the base model.
    stage("evaluation")
    steerable = SteerableModel(model, vectors)
    scorer = WorldScorer()
    eval_set = [{"prompt": task.question, "task": task_to_dict(task)} for task in eval_tasks]
    progress_path = staging / "grid_progress.jsonl"
    pareto = evaluate_steering(
        steerable, tokenizer, eval_set, scorer,
        axes={"helpfulness": config.axis, "verbosity": config.axis},
        baselines={f"scalarized DPO w={w}": policy for w, policy in baseline_models.items()},
        decoding=DecodingConfig(max_new_tokens=config.max_new_tokens, do_sample=True, temperature=config.temperature,
                                seed=config.seed),
        batch_size=config.eval_prompts, progress_path=progress_path, progress=progress,
        scorers={"helpfulness": "exact: 1 when the ground-truth answer is stated and no competing answer is",
                 "verbosity": "response length in whitespace-separated words"},
        baseline_labels="w · helpfulness + (1 - w) · verbosity / 50 words",
    )
    for baseline, w in zip(pareto["baselines"], baseline_models):
        baseline["w"] = w
    progress_path.unlink()

    # 6. The bundle itself.
    stage("bundle")
    descriptions = {
        "helpfulness": "positive: correct, relevant answers; negative: wrong, evasive or off-topic ones",
        "verbosity": "positive: longer, padded answers; negative: bare answers",
    }
    manifest = write_bundle(
        staging, {"path": "base"}, vectors, descriptions=descriptions, training=training,
        scorer=scorer.name, synthetic=True,
        description="TS-DPO demo: a tiny Llama model of a synthetic assistant world, steerable in helpfulness and verbosity.",
    )
    (staging / PARETO_NAME).write_text(json.dumps(pareto, indent=1) + "\n")
    (staging / EVAL_SET_NAME).write_text("".join(json.dumps(row) + "\n" for row in eval_set))
    (staging / "build_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    card = model_card(
        manifest, pareto, title="TS-DPO demo world bundle",
        summary="A synthetic demo: a small Llama-architecture model trained from scratch on generated assistant "
        "conversations, with one TS-DPO tangent vector for helpfulness and one for verbosity. Both objectives are "
        "scored exactly from the world's ground truth. Built by `python -m tsdpo build-demo`.",
    )
    (staging / "README.md").write_text(card)
    read_manifest(staging)  # the staged bundle must parse before it replaces the old one

    timings["done"] = time.perf_counter()
    names = list(timings)
    durations = {names[i]: round(timings[names[i + 1]] - timings[names[i]], 1) for i in range(len(names) - 1)}
    (staging / "training" / "timings.json").write_text(json.dumps(durations, indent=2) + "\n")
    logger.info("demo build stage durations (s): %s", durations)

    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return output
