"""Weight-grid evaluation: measure each composed model on held-out prompts, summarize as pareto.json.

Every grid point is the mean helpfulness and mean verbosity of the responses
to the same held-out prompts. Grid points are appended to a JSONL progress
file as they finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from tsdpo.compose import Mode, SteerableModel
from tsdpo.generation import DecodingConfig, generate_batch
from tsdpo.pareto import hypervolume, interpolate_grid, non_dominated, reference_point

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """Scores one response to one evaluation example on both plot axes."""

    name: str
    description: str

    def score(self, example: Mapping[str, Any], response: str) -> dict[str, float]:
        """Return {"helpfulness": h, "verbosity": v} for `response`."""
        ...


def measure(
    steerable: SteerableModel,
    tokenizer,
    eval_set: Sequence[Mapping[str, Any]],
    scorer: Scorer,
    weights: Mapping[str, float],
    mode: Mode = "tangent",
    decoding: DecodingConfig = DecodingConfig(),
    batch_size: int = 32,
) -> dict[str, float]:
    """Mean helpfulness and verbosity of the composed model's responses to `eval_set`."""
    if not eval_set:
        raise ValueError("the evaluation set is empty; it needs at least one prompt")
    prompts = [example["prompt"] for example in eval_set]
    responses = generate_batch(steerable, tokenizer, prompts, weights, mode, decoding, batch_size)
    if hasattr(scorer, "score_batch"):  # model-based scorers batch their forward passes
        scores = scorer.score_batch(eval_set, responses)
    else:
        scores = [scorer.score(example, response) for example, response in zip(eval_set, responses)]
    return {
        "helpfulness": sum(s["helpfulness"] for s in scores) / len(scores),
        "verbosity": sum(s["verbosity"] for s in scores) / len(scores),
    }


def evaluate_grid(
    measure_at: Callable[[dict[str, float]], dict[str, float]],
    axes: Mapping[str, Sequence[float]],
    progress_path: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every point of the weight grid, resuming from `progress_path` if it exists.

    Returns one record per grid point, {"weights": {...}, "helpfulness": h,
    "verbosity": v}, in row-major order of `axes`.
    """
    names = list(axes)
    done: dict[tuple, dict[str, Any]] = {}
    if progress_path is not None and Path(progress_path).is_file():
        for line in Path(progress_path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[tuple(record["weights"][n] for n in names)] = record
        logger.info("resuming grid evaluation: %d points already measured", len(done))

    points = list(itertools.product(*(axes[n] for n in names)))
    records = []
    handle = open(progress_path, "a") if progress_path is not None else None
    try:
        for values in tqdm(points, desc="weight grid", disable=not progress):
            key = tuple(float(v) for v in values)
            if key not in done:
                weights = dict(zip(names, key))
                done[key] = {"weights": weights, **measure_at(weights)}
                if handle is not None:
                    handle.write(json.dumps(done[key]) + "\n")
                    handle.flush()
            records.append(done[key])
    finally:
        if handle is not None:
            handle.close()
    return records


def summarize(
    grid: Sequence[Mapping[str, Any]],
    axes: Mapping[str, Sequence[float]],
    baselines: Sequence[Mapping[str, Any]],
    base: Mapping[str, float],
    **details: Any,
) -> dict[str, Any]:
    """Assemble pareto.json: the grid, its front, the baselines, the base point and hypervolumes."""
    grid_points = [(r["helpfulness"], r["verbosity"]) for r in grid]
    baseline_points = [(b["helpfulness"], b["verbosity"]) for b in baselines]
    everything = grid_points + baseline_points + [(base["helpfulness"], base["verbosity"])]
    reference = reference_point(everything)
    summary = {
        "format_version": 1,
        "axes": {name: list(map(float, values)) for name, values in axes.items()},
        "grid": list(grid),
        "front": non_dominated(grid_points),
        "baselines": list(baselines),
        "baseline_front": non_dominated(baseline_points) if baseline_points else [],
        "base": dict(base),
        "hypervolume": {
            "reference": list(reference),
            "ts_dpo": hypervolume(grid_points, reference),
            "baselines": hypervolume(baseline_points, reference) if baseline_points else None,
        },
    }
    summary.update(details)
    return summary


def grid_values(pareto: Mapping[str, Any]) -> tuple[list[float], list[float], list[list[tuple[float, float]]]]:
    """Return the two weight axes and the (helpfulness, verbosity) matrix of a two-objective grid."""
    names = list(pareto["axes"])
    if len(names) != 2:
        raise NotImplementedError(f"interpolation is implemented for two objectives; this grid has {names}")
    axis_a, axis_b = pareto["axes"][names[0]], pareto["axes"][names[1]]
    lookup = {(r["weights"][names[0]], r["weights"][names[1]]): (r["helpfulness"], r["verbosity"]) for r in pareto["grid"]}
    try:
        values = [[lookup[(a, b)] for b in axis_b] for a in axis_a]
    except KeyError as err:
        raise ValueError(f"pareto.json lacks the grid point {err.args[0]}; re-run the evaluation") from err
    return axis_a, axis_b, values


def interpolate_position(pareto: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, float]:
    """Interpolate the (helpfulness, verbosity) position of `weights` from the evaluated grid."""
    names = list(pareto["axes"])
    axis_a, axis_b, values = grid_values(pareto)
    h, v = interpolate_grid(axis_a, axis_b, values, weights.get(names[0], 0.0), weights.get(names[1], 0.0))
    return {"helpfulness": h, "verbosity": v}


def evaluate_steering(
    steerable: SteerableModel,
    tokenizer,
    eval_set: Sequence[Mapping[str, Any]],
    scorer: Scorer,
    axes: Mapping[str, Sequence[float]],
    baselines: Mapping[str, Any] | None = None,
    mode: Mode = "tangent",
    decoding: DecodingConfig = DecodingConfig(),
    batch_size: int = 32,
    progress_path: str | Path | None = None,
    progress: bool = True,
    **details: Any,
) -> dict[str, Any]:
    """Measure the weight grid, the base model and each baseline model; return pareto.json's content.

    `baselines` maps a label to a fine-tuned model (for example a scalarized-DPO
    policy) that shares the tokenizer. Grid points resume from `progress_path`.
    """
    def at(weights: Mapping[str, float]) -> dict[str, float]:
        return measure(steerable, tokenizer, eval_set, scorer, weights, mode, decoding, batch_size)

    grid = evaluate_grid(at, axes, progress_path=progress_path, progress=progress)
    base = at({})
    points = []
    for label, model in (baselines or {}).items():
        plain = SteerableModel(model, {})
        points.append({"name": label, **measure(plain, tokenizer, eval_set, scorer, {}, "merged", decoding, batch_size)})
    return summarize(
        grid, axes, points, base, mode=mode, eval_prompts=len(eval_set), decoding=asdict(decoding),
        scorer={"name": scorer.name, "description": scorer.description}, **details,
    )
