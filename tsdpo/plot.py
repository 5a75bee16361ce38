"""The helpfulness-vs-verbosity Pareto plot (plotly)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

GRID_COLOR = "#9bb7d4"
FRONT_COLOR = "#1f5fa8"
BASELINE_COLOR = "#d9822b"


def _weights_label(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:+.2f}" for name, value in weights.items())


def pareto_figure(
    pareto: Mapping[str, Any] | None,
    weights: Mapping[str, float] | None = None,
    interpolated: Mapping[str, float] | None = None,
    measured: Mapping[str, float] | None = None,
    verbosity_unit: str = "words",
) -> go.Figure:
    """Plot the TS-DPO grid and front, scalarized-DPO baselines, the base model and the current weights.

    x is mean verbosity and y mean helpfulness, so the good corner is top left.
    """
    figure = go.Figure()
    if pareto is not None:
        grid = pareto["grid"]
        figure.add_trace(go.Scatter(
            x=[r["verbosity"] for r in grid], y=[r["helpfulness"] for r in grid], mode="markers",
            name="TS-DPO weight grid", marker={"color": GRID_COLOR, "size": 7},
            text=[_weights_label(r["weights"]) for r in grid], hovertemplate="%{text}<extra>grid</extra>",
        ))
        front = [grid[i] for i in pareto["front"]]
        figure.add_trace(go.Scatter(
            x=[r["verbosity"] for r in front], y=[r["helpfulness"] for r in front], mode="lines+markers",
            name="TS-DPO Pareto front", line={"color": FRONT_COLOR, "width": 2}, marker={"color": FRONT_COLOR, "size": 8},
            text=[_weights_label(r["weights"]) for r in front], hovertemplate="%{text}<extra>front</extra>",
        ))
        baselines = sorted(pareto.get("baselines", []), key=lambda b: b["verbosity"])
        if baselines:
            figure.add_trace(go.Scatter(
                x=[b["verbosity"] for b in baselines], y=[b["helpfulness"] for b in baselines], mode="lines+markers",
                name="scalarized DPO", line={"color": BASELINE_COLOR, "dash": "dot"},
                marker={"color": BASELINE_COLOR, "size": 9, "symbol": "square"},
                text=[b["name"] for b in baselines], hovertemplate="%{text}<extra>baseline</extra>",
            ))
        base = pareto.get("base")
        if base:
            figure.add_trace(go.Scatter(
                x=[base["verbosity"]], y=[base["helpfulness"]], mode="markers", name="base model",
                marker={"color": "black", "size": 13, "symbol": "star"},
            ))
    if interpolated is not None:
        figure.add_trace(go.Scatter(
            x=[interpolated["verbosity"]], y=[interpolated["helpfulness"]], mode="markers",
            name="current weights (interpolated)", marker={"color": "#c0392b", "size": 16, "symbol": "circle-open",
                                                           "line": {"width": 3}},
            text=[_weights_label(weights or {})], hovertemplate="%{text}<extra>interpolated</extra>",
        ))
    if measured is not None:
        figure.add_trace(go.Scatter(
            x=[measured["verbosity"]], y=[measured["helpfulness"]], mode="markers",
            name="current weights (measured)", marker={"color": "#c0392b", "size": 13, "symbol": "diamond"},
            text=[_weights_label(weights or {})], hovertemplate="%{text}<extra>measured</extra>",
        ))
    figure.update_layout(
        xaxis_title=f"mean verbosity ({verbosity_unit}) — lower is more concise",
        yaxis_title="mean helpfulness — higher is better",
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        height=460,
        template="plotly_white",
    )
    return figure
