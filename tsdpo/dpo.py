"""Sequence log-probabilities and the DPO loss.

The loss is that of "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model" (Rafailov et al., 2023):

    L = -log σ(β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])

where y_w is the chosen and y_l the rejected completion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sequence_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """Sum the log-probabilities of the completion tokens of each sequence.

    logits: (batch, seq, vocab), the model's output on `input_ids`.
    input_ids: (batch, seq). completion_mask: (batch, seq), 1 on completion
    tokens (the final EOS included) and 0 on prompt and padding tokens.
    Returns (batch,) float32 sums of log π(token | prefix).
    """
    # Logits at position t predict the token at position t + 1.
    logits = logits[:, :-1, :].float()  # (batch, seq - 1, vocab); float32 for a stable log-softmax
    targets = input_ids[:, 1:]  # (batch, seq - 1)
    mask = completion_mask[:, 1:].bool()  # (batch, seq - 1)

    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)  # (batch, seq - 1)
    # where() rather than a product, so a non-finite value at a masked position cannot leak into the sum.
    return torch.where(mask, token_logps, 0.0).sum(-1)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return the mean DPO loss over the batch and the metrics DPO trainers log.

    All inputs have shape (batch,). The metrics use the names TRL logs:
    rewards/chosen and rewards/rejected are the implicit rewards
    β (log π - log π_ref), rewards/margins their difference, and
    rewards/accuracies the fraction of pairs whose chosen reward is higher.
    Reference log-probs are treated as constants.
    """
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps.detach())  # (batch,)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps.detach())  # (batch,)
    margins = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margins).mean()

    metrics = {
        "loss": loss.detach(),
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": margins.detach().mean(),
        "rewards/accuracies": (margins.detach() > 0).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    return loss, metrics


def split_chosen_rejected(values: Tensor) -> tuple[Tensor, Tensor]:
    """Split a (2 * batch,) tensor laid out as [chosen..., rejected...] in two halves."""
    half = values.shape[0] // 2
    return values[:half], values[half:]
