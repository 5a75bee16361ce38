"""The benchmark harness at the tiny size: every figure is reported, and the CLI flags parse.

These tests check the harness, never the timings.
"""

import argparse
import json
import math

import pytest

from tsdpo.bench import RESULT_KEYS, BenchConfig, add_bench_parser, cmd_bench, run_benchmark, weight_sequence

TINY = dict(size="tiny", repeats=1, warmup=0, batch_pairs=2, seq_len=16, prompt_len=4, new_tokens=4,
            compose_calls=2, slider_requests=1)


@pytest.fixture(scope="module")
def tiny_result():
    return run_benchmark(BenchConfig(**TINY))


@pytest.mark.parametrize("key", RESULT_KEYS)
def test_every_figure_is_finite_and_positive(tiny_result, key):
    value = tiny_result[key]
    if key == "train_step_ratio_vs_trl" and value is None:
        assert tiny_result[f"{key}_reason"]  # TRL may be missing, and then the result gives the reason
        return
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert value > 0


def test_result_records_machine_and_spreads(tiny_result):
    assert tiny_result["machine"]["torch"]
    ratio = tiny_result["train_details"]["vs_dpo"]
    assert ratio["low"] <= ratio["median"] <= ratio["high"]
    assert tiny_result["decode_details"]["tangent_lowest_at_batch"] in (1, 8)


def test_cli_writes_json(tmp_path):
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    path = tmp_path / "bench.json"
    args = parser.parse_args(["bench", "--size", "tiny", "--repeats", "1", "--warmup", "0", "--batch-pairs", "2",
                              "--seq-len", "16", "--new-tokens", "2", "--slider-requests", "1", "--no-trl",
                              "--json", str(path)])
    assert args.func is cmd_bench
    args.func(args)
    written = json.loads(path.read_text())
    assert set(RESULT_KEYS) <= set(written)
    assert written["train_step_ratio_vs_trl"] is None
    assert "skipped" in written["train_step_ratio_vs_trl_reason"]


def test_weight_sequence_does_not_repeat_soon():
    weights = weight_sequence(("helpfulness", "verbosity"))
    drawn = [tuple(next(weights).values()) for _ in range(200)]
    assert len(set(drawn)) == len(drawn)
    assert all(-1.0 <= value <= 2.0 for pair in drawn for value in pair)


@pytest.mark.parametrize("kwargs, message", [({"size": "huge"}, "size='huge'"), ({"repeats": 0}, "repeats=0"),
                                             ({"seq_len": 2}, "seq_len=2"), ({"decode_batches": ()}, "decode_batches")])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)
