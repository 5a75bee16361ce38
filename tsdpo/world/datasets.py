"""Preference pairs and pretraining conversations built from world tasks.

Every builder is deterministic given its seed. Prompts are the plain user
question strings.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tsdpo.data.pairs import PreferencePair
from tsdpo.world.responses import HELPFULNESS_LEVELS, VERBOSITY_LEVELS, render_response
from tsdpo.world.scorers import score_verbosity
from tsdpo.world.tasks import Task, sample_tasks

UNHELPFUL_LEVELS = HELPFULNESS_LEVELS[1:]
N_VERBOSITY_LEVELS = len(VERBOSITY_LEVELS)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _two_levels(rng: random.Random) -> tuple[int, int]:
    """Draw two distinct verbosity levels, returned as (lower, higher)."""
    low, high = sorted(rng.sample(range(N_VERBOSITY_LEVELS), 2))
    return low, high


def _check_longer(pair: PreferencePair, chosen_longer: bool) -> None:
    # Verbosity levels have disjoint word-count ranges, so this only fails if
    # the response templates change without keeping that property.
    chosen, rejected = score_verbosity(pair.chosen), score_verbosity(pair.rejected)
    if (chosen > rejected) != chosen_longer or chosen == rejected:
        raise RuntimeError(
            f"expected the chosen response to be {'longer' if chosen_longer else 'shorter'} "
            f"than the rejected one, got {chosen:.0f} and {rejected:.0f} words for {pair.prompt!r}; "
            "the verbosity levels of the response templates overlap in length"
        )


def helpfulness_pairs(
    tasks: Sequence[Task],
    n: int,
    seed: int,
    longer_fraction: float = 0.65,
) -> list[PreferencePair]:
    """Build `n` pairs whose chosen response is correct and rejected one is not.

    Tasks are drawn with the kinds in equal shares. The rejected response
    is wrong, evasive or off-topic with equal probability. In exactly `round(longer_fraction * n)` pairs the chosen
    response has more words than the rejected one, and in the rest fewer,
    because helpfulness and length correlate in human preference data such
    as HelpSteer and UltraFeedback. The two responses always sit at
    different verbosity levels, drawn uniformly.
    """
    _check_fraction("longer_fraction", longer_fraction)
    rng = random.Random(seed)
    picked = sample_tasks(tasks, n, rng)
    n_longer = round(longer_fraction * n)
    chosen_longer = [True] * n_longer + [False] * (n - n_longer)
    rng.shuffle(chosen_longer)

    pairs = []
    for task, longer in zip(picked, chosen_longer):
        low, high = _two_levels(rng)
        chosen_level, rejected_level = (high, low) if longer else (low, high)
        pair = PreferencePair(
            prompt=task.question,
            chosen=render_response(task, "correct", chosen_level, rng),
            rejected=render_response(task, rng.choice(UNHELPFUL_LEVELS), rejected_level, rng),
        )
        _check_longer(pair, longer)
        pairs.append(pair)
    return pairs


def verbosity_pairs(
    tasks: Sequence[Task],
    n: int,
    seed: int,
    wrong_fraction: float = 0.2,
) -> list[PreferencePair]:
    """Build `n` pairs whose chosen response has more words than the rejected one.

    Tasks are drawn with the kinds in equal shares. Both responses state the
    same answer, so helpfulness is equal: the correct answer, or in a
    `wrong_fraction` share of pairs the same wrong answer. The verbosity levels are two distinct levels drawn uniformly, and the
    chosen response takes the higher one.
    """
    _check_fraction("wrong_fraction", wrong_fraction)
    rng = random.Random(seed)
    pairs = []
    for task in sample_tasks(tasks, n, rng):
        low, high = _two_levels(rng)
        if rng.random() < wrong_fraction:
            wrong_answer = rng.choice(task.wrong_answers)
            chosen = render_response(task, "wrong", high, rng, wrong_answer=wrong_answer)
            rejected = render_response(task, "wrong", low, rng, wrong_answer=wrong_answer)
        else:
            chosen = render_response(task, "correct", high, rng)
            rejected = render_response(task, "correct", low, rng)
        pair = PreferencePair(prompt=task.question, chosen=chosen, rejected=rejected)
        _check_longer(pair, chosen_longer=True)
        pairs.append(pair)
    return pairs


def pretraining_conversations(
    tasks: Sequence[Task],
    n: int,
    seed: int,
    correct_fraction: float = 0.5,
    kind_alpha: float = 0.5,
) -> list[tuple[str, str]]:
    """Build `n` (question, response) pairs at mixed helpfulness and verbosity levels.

    Kinds get shares proportional to `(number of tasks) ** kind_alpha` (see
    `tasks.kind_quotas`). The default 0.5 sits between equal shares per kind,
    which starve the many arithmetic and comparison facts, and equal shares
    per task, which starve the small fact tables. A `correct_fraction` share of responses is correct, and the rest are
    wrong, evasive or off-topic with equal probability. Verbosity levels are
    uniform. A base model trained on this mix answers at every level, which
    gives preference optimization room to move it in both objectives.
    """
    _check_fraction("correct_fraction", correct_fraction)
    rng = random.Random(seed)
    conversations = []
    for task in sample_tasks(tasks, n, rng, kind_alpha=kind_alpha):
        helpfulness = "correct" if rng.random() < correct_fraction else rng.choice(UNHELPFUL_LEVELS)
        verbosity = rng.randrange(N_VERBOSITY_LEVELS)
        conversations.append((task.question, render_response(task, helpfulness, verbosity, rng)))
    return conversations
