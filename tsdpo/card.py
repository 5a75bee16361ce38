"""The bundle's model card: YAML metadata for the Hub plus a readable summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import ModelCardData

from tsdpo.bundle import Manifest
from tsdpo.hub import is_repo_id

CARD_TAGS = ["tsdpo", "dpo", "tangent-space", "steering", "multi-objective"]


def pareto_table(pareto: Mapping[str, Any]) -> str:
    """Markdown table of the base model, the scalarized-DPO baselines and the TS-DPO front."""
    rows = ["| model | weights | mean helpfulness | mean verbosity |", "| --- | --- | --- | --- |"]
    base = pareto["base"]
    rows.append(f"| base model | — | {base['helpfulness']:.3f} | {base['verbosity']:.1f} |")
    for baseline in pareto.get("baselines", []):
        rows.append(f"| {baseline['name']} | — | {baseline['helpfulness']:.3f} | {baseline['verbosity']:.1f} |")
    for index in pareto["front"]:
        point = pareto["grid"][index]
        weights = ", ".join(f"{k} {v:+.2f}" for k, v in point["weights"].items())
        rows.append(f"| TS-DPO front | {weights} | {point['helpfulness']:.3f} | {point['verbosity']:.1f} |")
    return "\n".join(rows)


def hypervolume_summary(pareto: Mapping[str, Any]) -> dict[str, Any]:
    """Summarize pareto.json for the card's metadata: hypervolumes, grid size and the front's points."""
    volume = pareto["hypervolume"]
    front = [
        {
            "weights": {name: float(value) for name, value in pareto["grid"][index]["weights"].items()},
            "helpfulness": round(float(pareto["grid"][index]["helpfulness"]), 4),
            "verbosity": round(float(pareto["grid"][index]["verbosity"]), 4),
        }
        for index in pareto["front"]
    ]
    return {
        "reference_point": [float(value) for value in volume["reference"]],
        "hypervolume_ts_dpo": round(float(volume["ts_dpo"]), 4),
        "hypervolume_scalarized_dpo": None if volume["baselines"] is None else round(float(volume["baselines"]), 4),
        "grid_points": len(pareto["grid"]),
        "eval_prompts": pareto.get("eval_prompts"),
        "front": front,
    }


def card_metadata(
    manifest: Manifest,
    pareto: Mapping[str, Any] | None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
) -> ModelCardData:
    """Build the card's YAML metadata: base_model, license, tags, datasets and, with a pareto.json, its figures."""
    repo_id = manifest.base_model.get("repo_id")
    extra: dict[str, Any] = {}
    if pareto is not None:
        extra["tsdpo_pareto"] = hypervolume_summary(pareto)
    return ModelCardData(
        # An embedded base model (base_model.path) or a local folder is not a Hub model to link to.
        base_model=repo_id if repo_id and is_repo_id(repo_id) else None,
        datasets=list(datasets) or None,
        library_name="tsdpo",
        license=license,
        tags=list(CARD_TAGS),
        **extra,
    )


def model_card(
    manifest: Manifest,
    pareto: Mapping[str, Any] | None,
    title: str,
    summary: str,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
) -> str:
    """Render README.md for a bundle, with YAML metadata the Hub reads."""
    metadata = card_metadata(manifest, pareto, license=license, datasets=datasets)
    objectives = "\n".join(f"- `{o.name}`: {o.description or 'no description'} (`{o.file}`)" for o in manifest.objectives)
    sections = [
        f"---\n{metadata.to_yaml()}\n---\n",
        f"# {title}\n",
        summary.strip() + "\n",
        "## Objectives\n",
        objectives + "\n",
        "## Use\n",
        "Serve this bundle with the tsdpo Gradio app (`python app.py --bundle <this folder or repo id>`) or load "
        "it with `tsdpo.bundle.load_bundle`. Each objective has a weight; the model is steered to "
        "θ0 + Σ α_k Δ_k without further training.\n",
    ]
    if manifest.parameter_patterns is not None:
        patterns = ", ".join(f"`{pattern}`" for pattern in manifest.parameter_patterns)
        sections.append(f"The vectors cover the parameters whose names match {patterns}; the others stay at θ0.\n")
    if pareto is not None:
        volume = pareto["hypervolume"]
        sections += [
            "## Evaluation\n",
            f"Weight grid of {len(pareto['grid'])} points in {pareto.get('mode', 'tangent')} mode, "
            f"{pareto.get('eval_prompts', '?')} held-out prompts per point. Hypervolume against the reference "
            f"point {volume['reference']}: TS-DPO {volume['ts_dpo']:.3f}, scalarized DPO "
            f"{volume['baselines'] if volume['baselines'] is None else round(volume['baselines'], 3)}.\n",
            pareto_table(pareto) + "\n",
        ]
    return "\n".join(sections)


def grid_tables(pareto: Mapping[str, Any]) -> str:
    """Two Markdown matrices of a two-objective grid: mean helpfulness and mean verbosity per weight pair."""
    first, second = list(pareto["axes"])
    lookup = {(r["weights"][first], r["weights"][second]): r for r in pareto["grid"]}
    tables = []
    for metric, digits in (("helpfulness", 2), ("verbosity", 1)):
        header = f"| {metric} at {first} ↓ / {second} → | " + " | ".join(f"{b:+.2f}" for b in pareto["axes"][second]) + " |"
        rows = [header, "| --- " * (len(pareto["axes"][second]) + 1) + "|"]
        for a in pareto["axes"][first]:
            cells = " | ".join(f"{lookup[(a, b)][metric]:.{digits}f}" for b in pareto["axes"][second])
            rows.append(f"| **{a:+.2f}** | {cells} |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def results_markdown(pareto: Mapping[str, Any]) -> str:
    """Render the README's results section for a bundle from its pareto.json."""
    volume = pareto["hypervolume"]
    decoding = pareto.get("decoding", {})
    sampling = (f"sampled at temperature {decoding['temperature']} with seed {decoding['seed']}"
                if decoding.get("do_sample") else "greedy")
    baselines = "n/a" if volume["baselines"] is None else f"{volume['baselines']:.3f}"
    lines = [
        f"Measured by `python -m tsdpo build-demo` on {pareto.get('eval_prompts')} held-out questions per point, "
        f"{pareto.get('mode', 'tangent')} mode, up to {decoding.get('max_new_tokens')} new tokens, {sampling}. "
        f"Helpfulness is the mean exact score in [0, 1]; verbosity the mean length in words.",
        "",
        f"Hypervolume for \"more helpful, less verbose\" against the reference point "
        f"(helpfulness {volume['reference'][0]:.2f}, verbosity {volume['reference'][1]:.1f}): "
        f"**TS-DPO grid {volume['ts_dpo']:.3f}**, **scalarized-DPO baselines {baselines}**.",
        "",
        pareto_table(pareto),
        "",
        "The whole TS-DPO grid:",
        "",
        grid_tables(pareto),
    ]
    return "\n".join(lines)
