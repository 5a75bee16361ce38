"""The demo build pipeline end to end, at the quick size: complete, loadable and deterministic."""

import json

import pytest

from tsdpo.bundle import load_bundle, sha256_file
from tsdpo.cli import main as cli_main
from tsdpo.compose import SteerableModel
from tsdpo.evaluate import measure
from tsdpo.generation import DecodingConfig
from tsdpo.models import load_base_model
from tsdpo.scorers import get_scorer


@pytest.fixture(scope="module")
def quick_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    for name in ("first", "second"):
        cli_main(["build-demo", "--quick", "--no-progress", "--output", str(root / name)])
    return root / "first", root / "second"


def test_quick_build_is_complete_and_loadable(quick_bundles):
    path = quick_bundles[0]
    bundle = load_bundle(path)
    assert bundle.objectives == ("helpfulness", "verbosity")
    assert bundle.manifest.synthetic and bundle.manifest.scorer == "tsdpo-world"
    assert not path.with_name(path.name + ".partial").exists()
    assert not (path / "training" / "helpfulness.safetensors").exists()  # the vector lives under vectors/ only

    pareto = bundle.pareto
    assert len(pareto["grid"]) == 9  # the quick axis has 3 values per slider
    assert [b["w"] for b in pareto["baselines"]] == [0.0, 1.0]
    assert pareto["eval_prompts"] == len(bundle.eval_set) == 8
    assert pareto["hypervolume"]["ts_dpo"] >= 0


def test_base_point_is_measured_at_zero_weights(quick_bundles):
    """pareto.json's base point equals a fresh measurement of the plain base model."""
    bundle = load_bundle(quick_bundles[0])
    model, tokenizer = load_base_model(str(quick_bundles[0] / "base"))
    decoding = DecodingConfig(**bundle.pareto["decoding"])
    fresh = measure(SteerableModel(model, {}), tokenizer, bundle.eval_set, get_scorer("tsdpo-world"), {}, "merged",
                    decoding)
    assert fresh == pytest.approx(bundle.pareto["base"])
    zero = next(r for r in bundle.pareto["grid"] if r["weights"] == {"helpfulness": 0.0, "verbosity": 0.0})
    assert zero["helpfulness"] == pytest.approx(fresh["helpfulness"])
    assert zero["verbosity"] == pytest.approx(fresh["verbosity"])


def test_build_is_deterministic(quick_bundles):
    first, second = quick_bundles
    for name in ("vectors/helpfulness.safetensors", "vectors/verbosity.safetensors", "base/model.safetensors"):
        assert sha256_file(first / name) == sha256_file(second / name), name
    assert json.loads((first / "pareto.json").read_text()) == json.loads((second / "pareto.json").read_text())
