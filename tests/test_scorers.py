"""Reward-model scorer against direct forward passes of the same classifier."""

import pytest
import torch
from conftest import build_tokenizer
from transformers import LlamaConfig, LlamaForSequenceClassification

from tsdpo.scorers import RewardModelScorer, get_scorer, load_reward_scorer

LABELS = {0: "helpfulness", 1: "correctness", 2: "verbosity"}
EXAMPLES = [{"prompt": "What is two plus three?"}, {"prompt": "Name the capital of France."}]
RESPONSES = ["Two plus three is five.", "Thanks for asking! The capital of France is Paris, I am happy to help."]


def reward_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_labels=3, id2label=LABELS,
                         label2id={v: k for k, v in LABELS.items()}, pad_token_id=0)
    return LlamaForSequenceClassification(config).eval()


def direct_reward(model, tokenizer, prompt, response, head):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0, head].item()


def test_batched_rewards_match_single_forward_per_head():
    model, tokenizer = reward_model(), build_tokenizer()
    for attribute, head in (("correctness", 1), (2, 2), ("0", 0)):
        scorer = RewardModelScorer(model, tokenizer, attribute=attribute, batch_size=2)
        scores = scorer.score_batch(EXAMPLES, RESPONSES)
        for example, response, score in zip(EXAMPLES, RESPONSES, scores):
            assert score["helpfulness"] == pytest.approx(direct_reward(model, tokenizer, example["prompt"], response, head), abs=1e-5)
            assert score["verbosity"] == len(response.split())


def test_token_verbosity_counts_tokenizer_tokens():
    tokenizer = build_tokenizer()
    scorer = RewardModelScorer(reward_model(), tokenizer, verbosity_unit="tokens")
    assert scorer.score(EXAMPLES[0], RESPONSES[0])["verbosity"] == len(tokenizer(RESPONSES[0], add_special_tokens=False)["input_ids"])


def test_bad_heads_and_units_are_rejected():
    model, tokenizer = reward_model(), build_tokenizer()
    with pytest.raises(ValueError, match="reward head 'harmlessness' not found.*correctness"):
        RewardModelScorer(model, tokenizer, attribute="harmlessness")
    with pytest.raises(ValueError, match="index 3 is out of range; the model has 3 heads"):
        RewardModelScorer(model, tokenizer, attribute=3)
    with pytest.raises(ValueError, match="verbosity_unit='characters'"):
        RewardModelScorer(model, tokenizer, verbosity_unit="characters")
    with pytest.raises(ValueError, match="scorer 'nope' is not built in"):
        get_scorer("nope")


def test_reward_scorer_loads_from_folder(tmp_path):
    model, tokenizer = reward_model(), build_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scorer = load_reward_scorer(str(tmp_path), attribute="helpfulness")
    expected = direct_reward(model, tokenizer, EXAMPLES[1]["prompt"], RESPONSES[1], 0)
    assert scorer.score(EXAMPLES[1], RESPONSES[1])["helpfulness"] == pytest.approx(expected, abs=1e-5)
