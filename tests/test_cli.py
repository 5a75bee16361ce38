"""The CLI end to end on tiny local models: train, make-bundle, evaluate, inspect, generate."""

import json

import pytest
import torch
from conftest import build_tokenizer, tiny_llama
from test_scorers import reward_model

from tsdpo.bundle import load_bundle
from tsdpo.cli import main
from tsdpo.vectors import load_vector

QUESTIONS = [f"What is {a} plus {b}?" for a in range(1, 7) for b in range(1, 6)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, tokenizer = tiny_llama(), build_tokenizer()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    reward = reward_model()
    reward.save_pretrained(root / "reward")
    tokenizer.save_pretrained(root / "reward")
    with open(root / "pairs.jsonl", "w") as handle:
        for question in QUESTIONS:
            a, b = int(question.split()[2]), int(question.split()[4].rstrip("?"))
            handle.write(json.dumps({"prompt": question, "chosen": f"{a} plus {b} is {a + b}.",
                                     "rejected": "I am not sure I can help with that, thanks for asking."}) + "\n")
    return root


def test_train_bundle_evaluate_flow(workspace, capsys):
    root = workspace
    for name in ("helpfulness", "verbosity"):
        main(["train", "--model", str(root / "base"), "--data", str(root / "pairs.jsonl"), "--objective", "preference",
              "--name", name, "--output", str(root / "out"), "--steps", "3", "--batch-size", "4", "--eval-size", "4"])
    vector = load_vector(root / "out" / "helpfulness.safetensors")
    assert vector.metadata["objective"] == "helpfulness"
    assert json.loads((root / "out" / "helpfulness.config.json").read_text())["steps"] == 3
    assert len((root / "out" / "helpfulness.metrics.jsonl").read_text().splitlines()) == 3
    held_out = [json.loads(line)["prompt"] for line in (root / "out" / "helpfulness.eval_prompts.jsonl").read_text().splitlines()]
    assert len(held_out) == 4
    assert set(held_out) <= set(QUESTIONS)

    main(["make-bundle", "--model", str(root / "base"), "--vector", f"helpfulness={root / 'out' / 'helpfulness.safetensors'}",
          "--vector", f"verbosity={root / 'out' / 'verbosity.safetensors'}",
          "--eval-prompts", str(root / "out" / "helpfulness.eval_prompts.jsonl"), "--output", str(root / "bundle")])
    main(["evaluate", str(root / "bundle"), "--reward-model", str(root / "reward"), "--reward-attribute", "correctness",
          "--axis", "-1", "0", "1", "--max-new-tokens", "6"])
    pareto = json.loads((root / "bundle" / "pareto.json").read_text())
    assert len(pareto["grid"]) == 9
    assert pareto["eval_prompts"] == 4
    assert "head 1 (correctness)" in pareto["scorer"]["description"]
    assert not (root / "bundle" / "grid_progress.jsonl").exists()
    manifest = json.loads((root / "bundle" / "tsdpo.json").read_text())
    assert manifest["base_model"] == {"path": "base"}  # a local base model travels inside the bundle
    bundle = load_bundle(root / "bundle")
    assert torch.equal(bundle.steerable.vectors["verbosity"].tensors["model.norm.weight"],
                       load_vector(root / "out" / "verbosity.safetensors").tensors["model.norm.weight"])

    capsys.readouterr()
    main(["inspect", "--bundle", str(root / "bundle")])
    report = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in report["objectives"]] == ["helpfulness", "verbosity"]


def test_generate_and_bad_weights(capsys):
    main(["generate", "What is 7 plus 5?", "--weight", "helpfulness=0.5", "--max-new-tokens", "8"])
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit, match="bundle's objectives are"):
        main(["generate", "Hi", "--weight", "kindness=1"])
    with pytest.raises(SystemExit, match="'lots' is not a number"):
        main(["generate", "Hi", "--weight", "helpfulness=lots"])
    with pytest.raises(SystemExit, match="outside the supported range"):
        main(["generate", "Hi", "--weight", "helpfulness=5"])
