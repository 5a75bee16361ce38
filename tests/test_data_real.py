"""Loaders and a short TS-DPO run on samples of real preference datasets.

The samples (HelpSteer's first 500 rows, 1000 rows of UltraFeedback
binarized) live outside the repository, in the folder that the environment
variable TSDPO_SHARED_DATA names, by default ../shared/data next to the
repository root. Without them these tests skip.
"""

import logging
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from tokenizer_zoo import chatml_tokenizer

from tsdpo.data import load_pairs, split_by_prompt
from tsdpo.data.readers import read_jsonl
from tsdpo.data.tokenize import collate_pairs, tokenize_pairs
from tsdpo.tangent import select_parameters
from tsdpo.train import TrainConfig, linearized_dpo_loss, train_tangent_vector

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_file(relative: str) -> Path:
    """Return a sample file under the shared data folder, or skip the test when it is absent."""
    folder = Path(os.environ.get("TSDPO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = folder / relative
    if not path.is_file():
        pytest.skip(f"real-data sample {path} not found; set TSDPO_SHARED_DATA to the folder that holds {relative}")
    return path


@pytest.fixture(scope="module")
def helpsteer_path():
    return shared_file("helpsteer/helpsteer_train_first500.jsonl")


@pytest.fixture(scope="module")
def ultrafeedback_path():
    return shared_file("ultrafeedback/ultrafeedback_binarized_train1000.jsonl")


# HelpSteer sample: 500 rows, 139 prompts, 697 same-prompt pairs of responses.
# Expected pairs = differing pairs minus pairs of identical text rated differently.
HELPSTEER_COUNTS = {
    # attribute: (pairs kept, tied pairs dropped, identical-text pairs dropped)
    "helpfulness": (387, 306, 4),
    "correctness": (366, 326, 5),
    "verbosity": (336, 354, 7),
}


@pytest.mark.parametrize("attribute", sorted(HELPSTEER_COUNTS))
def test_helpsteer_pair_counts(helpsteer_path, attribute, caplog):
    expected_pairs, ties, identical = HELPSTEER_COUNTS[attribute]
    with caplog.at_level(logging.INFO, logger="tsdpo.data.helpsteer"):
        pairs = load_pairs(helpsteer_path, objective=attribute)
    assert len(pairs) == expected_pairs
    assert f"dropped {ties} tied pairs and {identical} pairs of identical responses" in caplog.text
    assert expected_pairs + ties + identical == 697
    assert all(pair.chosen != pair.rejected for pair in pairs)


def test_helpsteer_verbosity_pairs_favor_longer_responses(helpsteer_path):
    pairs = load_pairs(helpsteer_path, objective="verbosity")
    longer = sum(len(pair.chosen.split()) > len(pair.rejected.split()) for pair in pairs)
    assert longer / len(pairs) > 0.8  # the verbosity rating mostly tracks length


def test_helpsteer_length_pairs(helpsteer_path):
    pairs = load_pairs(helpsteer_path, objective="length")
    assert len(pairs) == 194
    for pair in pairs:
        chosen_words, rejected_words = len(pair.chosen.split()), len(pair.rejected.split())
        assert chosen_words >= 1.5 * rejected_words
        assert chosen_words - rejected_words >= 20


def test_ultrafeedback_drops_tied_scores(ultrafeedback_path, caplog):
    with caplog.at_level(logging.INFO, logger="tsdpo.data.pairwise"):
        pairs = load_pairs(ultrafeedback_path, format="ultrafeedback", objective="helpfulness")
    # 1000 rows - 111 tied scores - 3 rows whose chosen and rejected texts are equal.
    assert len(pairs) == 886
    assert "dropped 111 pairs with tied scores and 3 with identical completions" in caplog.text
    assert load_pairs(ultrafeedback_path, objective="helpfulness") == pairs  # layout recognized from columns


def test_ultrafeedback_verbosity_by_length(ultrafeedback_path):
    pairs = load_pairs(ultrafeedback_path, format="ultrafeedback", objective="verbosity")
    assert len(pairs) == 245
    assert all(len(pair.chosen.split()) - len(pair.rejected.split()) >= 20 for pair in pairs)


def test_real_splits_deterministic_disjoint(helpsteer_path, ultrafeedback_path):
    for path in (helpsteer_path, ultrafeedback_path):
        pairs = load_pairs(path, objective="helpfulness")
        split = split_by_prompt(pairs, eval_size=0.1, seed=0)
        assert split == split_by_prompt(pairs, eval_size=0.1, seed=0)
        assert not {pair.prompt for pair in split.train} & set(split.eval_prompts)
        distinct_prompts = len({pair.prompt for pair in pairs})
        assert len(split.eval_prompts) == math.ceil(0.1 * distinct_prompts)
        assert len(split.train) + len(split.eval) == len(pairs)


def test_datasets_route_matches_jsonl_reader(helpsteer_path, tmp_path):
    pytest.importorskip("datasets", reason="the datasets route needs `pip install datasets`")
    through_datasets = load_pairs(helpsteer_path, format="hf", objective="helpfulness", cache_dir=tmp_path)
    assert through_datasets == load_pairs(helpsteer_path, objective="helpfulness")


def test_short_training_run_on_helpsteer(helpsteer_path):
    rows = read_jsonl(helpsteer_path)
    tokenizer = chatml_tokenizer([row["prompt"] for row in rows] + [row["response"] for row in rows], vocab_size=512)
    split = split_by_prompt(load_pairs(helpsteer_path, objective="helpfulness"), eval_size=0.1, seed=0)
    train_pairs = split.train[:64]
    model = tiny_llama(vocab_size=len(tokenizer))
    config = TrainConfig(
        objective="helpfulness", steps=24, batch_size=8, learning_rate=5e-3, warmup_steps=2,
        max_length=48, max_prompt_length=24, seed=0,
    )

    vector, history = train_tangent_vector(model, tokenizer, train_pairs, config, progress=False)

    losses = [record["loss"] for record in history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert all(math.isfinite(loss) for loss in losses)

    # Rewards of the trained vector on every training pair, in one batch.
    tokenized = tokenize_pairs(tokenizer, train_pairs, config.max_length, config.max_prompt_length)
    batch = collate_pairs(tokenized, tokenizer.pad_token_id)
    with torch.no_grad():
        _, metrics = linearized_dpo_loss(model, select_parameters(model), vector.tensors, batch, config.beta)
    assert metrics["rewards/accuracies"].item() > 0.5
    assert metrics["rewards/margins"].item() > 0
