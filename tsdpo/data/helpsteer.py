"""Preference pairs from HelpSteer and HelpSteer2 rows.

Each row contains one response with integer ratings 0-4 (higher is more) of
helpfulness, correctness, coherence, complexity and verbosity:
{"prompt", "response", "helpfulness", ..., "verbosity"}. Several rows share a
prompt. For one attribute, every two responses to the same prompt whose
ratings differ make a pair, the higher-rated response chosen. Equal ratings
are ties and are dropped, and so are two rows with the same response text,
because a response cannot be preferred to itself.

HelpSteer: "HelpSteer: Multi-attribute Helpfulness Dataset for SteerLM"
(Wang et al., 2023); HelpSteer2 (Wang et al., 2024) has the same columns.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from numbers import Real

from tsdpo.data.pairs import PreferencePair
from tsdpo.data.readers import Row, require_row_columns
from tsdpo.data.verbosity import LengthRule, length_pair

logger = logging.getLogger(__name__)

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def rating(row: Row, attribute: str, index: int, source: str) -> float:
    value = row[attribute]
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{source}: row {index} has {attribute}={value!r}; ratings must be numbers such as 0-4")
    return value


def require_text(row: Row, column: str, index: int, source: str) -> None:
    if not isinstance(row[column], str):
        raise ValueError(f"{source}: row {index} has {column} of type {type(row[column]).__name__}; expected text")


def same_prompt_candidates(rows: Sequence[Row], source: str) -> Iterator[tuple[int, int]]:
    """Yield every two row indices that share a prompt, in first-appearance order."""
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        require_text(row, "prompt", index, source)
        require_text(row, "response", index, source)
        groups.setdefault(row["prompt"], []).append(index)
    for indices in groups.values():
        yield from itertools.combinations(indices, 2)


def helpsteer_rating_pairs(rows: Sequence[Row], attribute: str, source: str = "rows") -> list[PreferencePair]:
    """Pair same-prompt responses that differ on `attribute`, the higher rating chosen.

    `attribute` is one of HELPSTEER_ATTRIBUTES; "verbosity" gives pairs whose
    chosen response is rated more verbose.
    """
    if attribute not in HELPSTEER_ATTRIBUTES:
        raise ValueError(f"unknown HelpSteer attribute {attribute!r}; choose one of {list(HELPSTEER_ATTRIBUTES)}")
    require_row_columns(rows, ("prompt", "response", attribute), source, "HelpSteer")

    pairs, ties, identical = [], 0, 0
    for i, j in same_prompt_candidates(rows, source):
        first, second = rows[i], rows[j]
        first_rating, second_rating = rating(first, attribute, i, source), rating(second, attribute, j, source)
        if first_rating == second_rating:
            ties += 1
        elif first["response"] == second["response"]:
            identical += 1
        elif first_rating > second_rating:
            pairs.append(PreferencePair(first["prompt"], chosen=first["response"], rejected=second["response"]))
        else:
            pairs.append(PreferencePair(first["prompt"], chosen=second["response"], rejected=first["response"]))

    logger.info(
        "%s: %d %s pairs; dropped %d tied pairs and %d pairs of identical responses with different ratings",
        source, len(pairs), attribute, ties, identical,
    )
    return pairs


def helpsteer_length_pairs(rows: Sequence[Row], rule: LengthRule = LengthRule(), source: str = "rows") -> list[PreferencePair]:
    """Pair same-prompt responses by length (see tsdpo.data.verbosity), helpfulness held within the gap."""
    require_row_columns(rows, ("prompt", "response", "helpfulness"), source, "HelpSteer")

    pairs = []
    for i, j in same_prompt_candidates(rows, source):
        first, second = rows[i], rows[j]
        pair = length_pair(
            first["prompt"],
            first["response"],
            second["response"],
            rule,
            rating(first, "helpfulness", i, source),
            rating(second, "helpfulness", j, source),
        )
        if pair is not None:
            pairs.append(pair)

    logger.info("%s: %d length pairs with helpfulness within %s", source, len(pairs), rule.max_score_gap)
    return pairs
