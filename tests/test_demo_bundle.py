"""The committed demo bundle: complete, small, and reported faithfully in the README."""

import json
from pathlib import Path

import pytest

from app import DEFAULT_BUNDLE
from tsdpo.bundle import load_bundle
from tsdpo.card import results_markdown
from tsdpo.world.build import DemoBuildConfig, task_from_dict
from tsdpo.world.scorers import score_helpfulness
from tsdpo.world.tasks import split_tasks

DEMO = Path(DEFAULT_BUNDLE)
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEMO)


def test_demo_bundle_is_complete(bundle):
    config = DemoBuildConfig()
    pareto = bundle.pareto
    assert bundle.objectives == ("helpfulness", "verbosity")
    assert len(pareto["grid"]) == len(config.axis) ** 2 >= 49
    assert [b["w"] for b in pareto["baselines"]] == list(config.baseline_weights)
    assert pareto["eval_prompts"] == len(bundle.eval_set) == config.eval_prompts
    for name in ("helpfulness", "verbosity"):
        metadata = bundle.steerable.vectors[name].metadata
        assert metadata["objective"] == name
        assert {"base_model", "beta", "steps", "data"} <= set(metadata)


def test_demo_bundle_is_under_25_mb():
    size = sum(path.stat().st_size for path in DEMO.rglob("*") if path.is_file())
    assert size < 25 * 2**20, f"{size / 2**20:.1f} MB"


def test_eval_questions_are_held_out(bundle):
    train_questions = {task.question for task in split_tasks(seed=DemoBuildConfig().seed).train}
    for example in bundle.eval_set:
        assert example["prompt"] not in train_questions
        task = task_from_dict(example["task"])
        assert score_helpfulness(task, task.answer) == 1.0  # the stored ground truth is intact


def test_readme_reports_the_bundle_results(bundle):
    text = README.read_text()
    start, end = text.index("<!-- results:start -->\n"), text.index("<!-- results:end -->")
    assert text[start + len("<!-- results:start -->\n") : end].strip() == results_markdown(bundle.pareto).strip()


def test_build_config_is_recorded():
    recorded = json.loads((DEMO / "build_config.json").read_text())
    assert recorded["seed"] == DemoBuildConfig().seed
    assert recorded["axis"] == DemoBuildConfig().axis
