"""The bundle's model card: YAML metadata for the Hub plus a readable summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tsdpo.bundle import Manifest


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
    volume = pareto["hypervolume"]
    return {
        "reference_point": volume["reference"],
        "hypervolume_ts_dpo": round(volume["ts_dpo"], 4),
        "hypervolume_scalarized_dpo": None if volume["baselines"] is None else round(volume["baselines"], 4),
        "grid_points": len(pareto["grid"]),
        "eval_prompts": pareto.get("eval_prompts"),
    }


def model_card(
    manifest: Manifest,
    pareto: Mapping[str, Any] | None,
    title: str,
    summary: str,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
) -> str:
    """Render README.md for a bundle, with YAML metadata the Hub reads."""
    base = manifest.base_model
    metadata: dict[str, Any] = {"library_name": "tsdpo", "license": license,
                                "tags": ["tsdpo", "dpo", "tangent-space", "steering", "multi-objective"]}
    if "repo_id" in base:
        metadata["base_model"] = base["repo_id"]
    if datasets:
        metadata["datasets"] = list(datasets)
    if pareto is not None:
        metadata["tsdpo_pareto"] = hypervolume_summary(pareto)

    # JSON is valid YAML, so each value is written with json.dumps and needs no YAML library.
    front_matter = "\n".join(f"{key}: {json.dumps(value)}" for key, value in metadata.items())
    objectives = "\n".join(f"- `{o.name}`: {o.description or 'no description'} (`{o.file}`)" for o in manifest.objectives)
    sections = [
        f"---\n{front_matter}\n---\n",
        f"# {title}\n",
        summary.strip() + "\n",
        "## Objectives\n",
        objectives + "\n",
        "## Use\n",
        "Serve this bundle with the tsdpo Gradio app (`python app.py --bundle <this folder or repo id>`) or load "
        "it with `tsdpo.bundle.load_bundle`. Each objective has a weight; the model is steered to "
        "θ0 + Σ α_k Δ_k without further training.\n",
    ]
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
