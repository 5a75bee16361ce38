"""Pareto analysis for "more helpful, less verbose": fronts, hypervolume, grid interpolation.

A point is (helpfulness, verbosity). Helpfulness is maximized and verbosity
minimized, so a point dominates another when it is at least as helpful and
at most as verbose, and strictly better in one of the two.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Point = tuple[float, float]  # (helpfulness, verbosity)


def dominates(a: Point, b: Point) -> bool:
    """Return True when `a` is at least as good as `b` on both axes and better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, sorted by verbosity."""
    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by `points` and bounded by `reference` (a worst-case corner).

    Only points more helpful and less verbose than the reference count. The
    area is the union of the rectangles [ref_v, v] × [ref_h, h], swept in
    order of increasing verbosity.
    """
    ref_h, ref_v = reference
    inside = sorted((v, h) for h, v in points if h > ref_h and v < ref_v)
    area = 0.0
    best_h = ref_h
    for index, (v, h) in enumerate(inside):
        best_h = max(best_h, h)
        next_v = inside[index + 1][0] if index + 1 < len(inside) else ref_v
        area += (next_v - v) * (best_h - ref_h)
    return area


def reference_point(points: Sequence[Point]) -> Point:
    """Return a reference point shared by the fronts compared: zero helpfulness, 10% above the largest verbosity."""
    return 0.0, 1.1 * max(v for _, v in points)


def interpolate_grid(
    axis_a: Sequence[float], axis_b: Sequence[float], values: Sequence[Sequence[Point]], a: float, b: float
) -> Point:
    """Bilinearly interpolate grid values at weights (a, b).

    `values[i][j]` is the point measured at weights (axis_a[i], axis_b[j]);
    both axes are increasing. Weights outside the grid raise ValueError.
    """
    if not (axis_a[0] <= a <= axis_a[-1] and axis_b[0] <= b <= axis_b[-1]):
        raise ValueError(
            f"weights ({a}, {b}) are outside the evaluated grid "
            f"[{axis_a[0]}, {axis_a[-1]}] × [{axis_b[0]}, {axis_b[-1]}]"
        )
    i, s = _cell(axis_a, a)
    j, t = _cell(axis_b, b)
    corners = (values[i][j], values[i + 1][j], values[i][j + 1], values[i + 1][j + 1])
    weights = ((1 - s) * (1 - t), s * (1 - t), (1 - s) * t, s * t)
    return (
        sum(w * c[0] for w, c in zip(weights, corners)),
        sum(w * c[1] for w, c in zip(weights, corners)),
    )


def _cell(axis: Sequence[float], x: float) -> tuple[int, float]:
    """Index of the grid cell containing x, and x's fractional position inside it."""
    if len(axis) == 1:
        raise ValueError("interpolation needs at least two grid values per axis")
    i = min(max(bisect.bisect_right(axis, x) - 1, 0), len(axis) - 2)
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])
