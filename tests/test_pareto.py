"""Pareto front, hypervolume and grid interpolation against brute-force references."""

import random

import pytest

from tsdpo.evaluate import evaluate_grid, interpolate_position, summarize
from tsdpo.pareto import dominates, hypervolume, interpolate_grid, non_dominated


def rasterized_hypervolume(points, reference, cells=400):
    """Count cells of a fine grid that some point dominates: a slow, obvious reference."""
    ref_h, ref_v = reference
    top_h = max(h for h, _ in points)
    low_v = min(v for _, v in points)
    dh, dv = (top_h - ref_h) / cells, (ref_v - low_v) / cells
    covered = 0
    for i in range(cells):
        h = ref_h + (i + 0.5) * dh
        for j in range(cells):
            v = low_v + (j + 0.5) * dv
            covered += any(ph >= h and pv <= v for ph, pv in points)
    return covered * dh * dv


def test_front_of_hand_example():
    points = [(0.9, 30.0), (0.5, 10.0), (0.4, 20.0), (0.9, 40.0), (0.2, 5.0)]
    assert non_dominated(points) == [4, 1, 0]  # sorted by verbosity
    assert dominates((0.5, 10.0), (0.4, 20.0))
    assert not dominates((0.5, 10.0), (0.5, 10.0))


def test_front_matches_brute_force_on_random_points():
    rng = random.Random(0)
    points = [(rng.random(), rng.uniform(5, 60)) for _ in range(60)]
    expected = {i for i, p in enumerate(points) if all(not (q[0] >= p[0] and q[1] <= p[1] and q != p) for q in points)}
    assert set(non_dominated(points)) == expected


def test_hypervolume_of_rectangles():
    assert hypervolume([(1.0, 1.0)], (0.0, 3.0)) == pytest.approx(2.0)
    assert hypervolume([(1.0, 2.0), (0.5, 1.0)], (0.0, 3.0)) == pytest.approx(1.5)
    assert hypervolume([(-0.1, 1.0), (0.5, 4.0)], (0.0, 3.0)) == 0.0  # both outside the reference box


def test_hypervolume_matches_rasterization():
    rng = random.Random(1)
    points = [(rng.random(), rng.uniform(5, 60)) for _ in range(12)]
    reference = (0.0, 66.0)
    assert hypervolume(points, reference) == pytest.approx(rasterized_hypervolume(points, reference), rel=1e-2)


def test_bilinear_interpolation_is_exact_for_bilinear_functions():
    axis_a, axis_b = [-1.0, 0.0, 0.5, 2.0], [-1.0, 1.0, 2.0]

    def f(a, b):
        return (0.3 + 0.1 * a - 0.05 * b + 0.02 * a * b, 20 - 3 * a + 4 * b + 0.5 * a * b)

    values = [[f(a, b) for b in axis_b] for a in axis_a]
    for a, b in [(-1.0, -1.0), (0.25, 0.3), (1.7, 1.9), (2.0, 2.0), (0.0, 1.0)]:
        assert interpolate_grid(axis_a, axis_b, values, a, b) == pytest.approx(f(a, b))
    with pytest.raises(ValueError, match="outside the evaluated grid"):
        interpolate_grid(axis_a, axis_b, values, 2.5, 0.0)


def test_grid_evaluation_resumes_without_remeasuring(tmp_path):
    axes = {"helpfulness": [0.0, 1.0], "verbosity": [-1.0, 0.0, 1.0]}
    calls = []

    def measure_at(weights):
        calls.append(dict(weights))
        return {"helpfulness": weights["helpfulness"] / 2, "verbosity": 10 + weights["verbosity"]}

    progress = tmp_path / "grid.jsonl"
    progress.write_text('{"weights": {"helpfulness": 0.0, "verbosity": -1.0}, "helpfulness": 0.0, "verbosity": 9.0}\n')
    records = evaluate_grid(measure_at, axes, progress, progress=False)
    assert len(records) == 6
    assert len(calls) == 5  # the stored point was not measured again
    assert len(progress.read_text().splitlines()) == 6

    summary = summarize(records, axes, [], {"helpfulness": 0.0, "verbosity": 10.0})
    assert interpolate_position(summary, {"helpfulness": 0.5, "verbosity": 0.5}) == pytest.approx(
        {"helpfulness": 0.25, "verbosity": 10.5}
    )
    assert summary["front"] == [3]  # (h=0.5, v=9) dominates every other point
