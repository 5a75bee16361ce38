"""Training loops: the loss falls, artifacts are written, the base stays frozen."""

import json
import math

import pytest
import torch
from conftest import tiny_llama

from tsdpo.data.pairs import PreferencePair
from tsdpo.train import TrainConfig, learning_rate_factor, train_standard_dpo, train_tangent_vector
from tsdpo.vectors import load_vector

PAIRS = [
    PreferencePair(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", "I am not sure I can help with that.")
    for a in range(1, 5)
    for b in range(1, 4)
]


def test_tangent_training_lowers_loss_and_writes_artifacts(tokenizer, tmp_path):
    model = tiny_llama()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    config = TrainConfig(objective="helpfulness", steps=25, batch_size=4, learning_rate=1e-2, warmup_steps=2, beta=0.5)
    vector, history = train_tangent_vector(model, tokenizer, PAIRS, config, tmp_path, base_model_name="tiny")

    assert math.isclose(history[0]["loss"], math.log(2), rel_tol=1e-5)  # Δ = 0 at the first step
    assert history[-1]["loss"] < 0.5 * math.log(2)
    assert history[-1]["rewards/accuracies"] == 1.0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"{name} changed: θ0 must stay frozen"

    saved = load_vector(tmp_path / "helpfulness.safetensors")
    assert saved.metadata["objective"] == "helpfulness"
    assert saved.metadata["base_model"] == "tiny"
    assert saved.metadata["steps"] == "25"
    assert torch.equal(saved.tensors["model.norm.weight"], vector.tensors["model.norm.weight"])
    assert json.loads((tmp_path / "helpfulness.config.json").read_text())["beta"] == 0.5
    lines = (tmp_path / "helpfulness.metrics.jsonl").read_text().splitlines()
    assert len(lines) == 25
    assert set(json.loads(lines[0])) >= {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}


def test_training_is_deterministic_with_seed(tokenizer):
    config = TrainConfig(steps=3, batch_size=4, gradient_accumulation_steps=2, seed=5)
    first, _ = train_tangent_vector(tiny_llama(), tokenizer, PAIRS, config, progress=False)
    second, _ = train_tangent_vector(tiny_llama(), tokenizer, PAIRS, config, progress=False)
    for name, tensor in first.tensors.items():
        assert torch.equal(tensor, second.tensors[name])


def test_parameter_subset_trains_only_selected(tokenizer):
    config = TrainConfig(steps=2, batch_size=4, parameter_patterns=(r"layers\.1\.",))
    vector, _ = train_tangent_vector(tiny_llama(), tokenizer, PAIRS, config, progress=False)
    assert vector.tensors and all(".layers.1." in name for name in vector.tensors)


def test_standard_dpo_lowers_loss(tokenizer):
    model = tiny_llama()
    config = TrainConfig(objective="baseline", steps=20, batch_size=4, learning_rate=3e-3, warmup_steps=2, beta=0.5)
    policy, history = train_standard_dpo(model, tokenizer, PAIRS, config, progress=False)
    assert math.isclose(history[0]["loss"], math.log(2), rel_tol=1e-5)
    assert history[-1]["loss"] < 0.5 * math.log(2)
    assert policy is not model


def test_schedule_warms_up_then_decays():
    config = TrainConfig(steps=10, warmup_steps=4, schedule="linear")
    factors = [learning_rate_factor(step, config) for step in range(10)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert factors[-1] < factors[5]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"beta": 0}, "beta=0"), ({"steps": 0}, "steps=0"), ({"warmup_steps": 20, "steps": 10}, "warmup_steps=20"),
     ({"schedule": "step"}, "schedule='step'")],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
