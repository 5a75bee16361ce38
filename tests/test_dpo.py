"""Sequence log-probs and the DPO loss against brute-force and standard-DPO references."""

import math

import torch
from conftest import tiny_llama

from tsdpo.data.pairs import PreferencePair
from tsdpo.data.tokenize import collate_pairs, tokenize_pairs
from tsdpo.dpo import dpo_loss, sequence_logps, split_chosen_rejected
from tsdpo.tangent import select_parameters
from tsdpo.train import linearized_dpo_loss, standard_dpo_loss

PAIRS = [
    PreferencePair("What is two plus three?", "Two plus three is five.", "I am not sure."),
    PreferencePair("Name the capital of France.", "Paris.", "Thanks for asking! I am happy to help you today."),
]


def brute_force_logps(model, prompt_ids, completion_ids):
    """Sum log p(token | prefix) over the completion, one unpadded forward per token."""
    total = 0.0
    sequence = list(prompt_ids)
    with torch.no_grad():
        for token in completion_ids:
            logits = model(input_ids=torch.tensor([sequence])).logits[0, -1]
            total += torch.log_softmax(logits.double(), -1)[token].item()
            sequence.append(token)
    return total


def test_sequence_logps_match_token_by_token(model, tokenizer):
    tokenized = tokenize_pairs(tokenizer, PAIRS)
    batch = collate_pairs(tokenized, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    batched = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])

    expected = [brute_force_logps(model, p.prompt_ids, p.chosen_ids) for p in tokenized]
    expected += [brute_force_logps(model, p.prompt_ids, p.rejected_ids) for p in tokenized]
    torch.testing.assert_close(batched.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-4)


def test_completion_mask_scores_eos_once(tokenizer):
    tokenized = tokenize_pairs(tokenizer, PAIRS[:1])
    batch = collate_pairs(tokenized, tokenizer.pad_token_id)
    eos = tokenizer.eos_token_id
    for row in range(2):
        scored = batch["input_ids"][row][batch["completion_mask"][row].bool()].tolist()
        assert scored.count(eos) == 1
        assert scored[-1] == eos
    prompt_length = len(tokenized[0].prompt_ids)
    assert batch["completion_mask"][:, :prompt_length].sum() == 0


def test_dpo_loss_log_two_at_reference():
    logps = torch.tensor([-3.0, -7.5, -1.25])
    loss, metrics = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)
    assert metrics["rewards/margins"].item() == 0.0


def test_dpo_metrics_match_hand_computation():
    loss, metrics = dpo_loss(
        torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]),
        beta=0.5,
    )
    # chosen rewards 0.5 * (1, 0) and rejected rewards 0.5 * (-1, 1) give margins (1, -0.5).
    expected = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(0.5)))) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert metrics["rewards/accuracies"].item() == 0.5
    assert math.isclose(metrics["rewards/margins"].item(), 0.25, rel_tol=1e-6)


def test_linearized_dpo_is_log_two_at_zero(tokenizer):
    model = tiny_llama()
    params = select_parameters(model)
    zero = {name: torch.zeros_like(p, requires_grad=True) for name, p in params.items()}
    batch = collate_pairs(tokenize_pairs(tokenizer, PAIRS), tokenizer.pad_token_id)
    loss, _ = linearized_dpo_loss(model, params, zero, batch, beta=0.1)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)


def test_linearized_gradient_equals_standard_at_zero(model, tokenizer):
    """At Δ = 0 the linearized model and its gradient agree with the real model."""
    model = model.double()
    batch = collate_pairs(tokenize_pairs(tokenizer, PAIRS), tokenizer.pad_token_id)
    params = select_parameters(model)
    zero = {name: torch.zeros_like(p, requires_grad=True) for name, p in params.items()}
    loss, _ = linearized_dpo_loss(model, params, zero, batch, beta=0.1)
    linearized_grads = torch.autograd.grad(loss, list(zero.values()))

    policy = model
    policy.requires_grad_(True)
    standard_loss, _ = standard_dpo_loss(policy, model, batch, beta=0.1)
    standard_grads = torch.autograd.grad(standard_loss, [dict(policy.named_parameters())[n] for n in params])

    for name, linearized, standard in zip(params, linearized_grads, standard_grads):
        torch.testing.assert_close(linearized, standard, rtol=1e-6, atol=1e-10, msg=f"gradient of {name}")
    assert max(g.abs().max() for g in standard_grads) > 1e-6


def test_split_chosen_rejected_halves():
    chosen, rejected = split_chosen_rejected(torch.arange(6))
    assert chosen.tolist() == [0, 1, 2]
    assert rejected.tolist() == [3, 4, 5]
