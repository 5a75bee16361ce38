"""Preference pairs from rows that each hold one prompt and two completions.

This covers generic preference files ({"prompt", "chosen", "rejected"}, as
text or message lists) and UltraFeedback binarized, which adds the scores
score_chosen and score_rejected, either as columns or inside a "metadata"
object. The trl-lib copy of UltraFeedback has no prompt column, and its
chosen and rejected are message lists that start with the user turn. Both
layouts load the same way.

UltraFeedback: "UltraFeedback: Boosting Language Models with Scaled AI
Feedback" (Cui et al., 2023).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from numbers import Real

from tsdpo.data.conversation import pair_from_fields
from tsdpo.data.pairs import PreferencePair
from tsdpo.data.readers import Row, require_row_columns
from tsdpo.data.verbosity import LengthRule, length_pair

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ("score_chosen", "score_rejected")


def row_scores(row: Row, index: int, source: str) -> tuple[float, float] | None:
    """Return (score_chosen, score_rejected) from the row or its "metadata", or None if absent."""
    if SCORE_COLUMNS[0] in row:
        holder = row
    elif isinstance(row.get("metadata"), dict) and SCORE_COLUMNS[0] in row["metadata"]:
        holder = row["metadata"]
    else:
        return None

    scores = tuple(holder.get(column) for column in SCORE_COLUMNS)
    for column, value in zip(SCORE_COLUMNS, scores):
        if not isinstance(value, Real) or isinstance(value, bool):
            raise ValueError(f"{source}: row {index} has {column}={value!r}; scores must be numbers")
    return scores


def row_pair(row: Row, index: int, source: str) -> PreferencePair:
    return pair_from_fields(row.get("prompt"), row["chosen"], row["rejected"], f"{source}: row {index}")


def labelled_pairs(rows: Sequence[Row], source: str = "rows", require_scores: bool = False) -> list[PreferencePair]:
    """Keep each row's chosen/rejected label; drop tied scores and identical completions.

    Rows with scores and score_chosen == score_rejected are ties: the label
    carries no preference, so they are dropped and counted in a log line. With
    `require_scores`, a row without scores raises ValueError.
    """
    require_row_columns(rows, ("chosen", "rejected"), source, "preference")

    pairs, ties, identical = [], 0, 0
    for index, row in enumerate(rows):
        scores = row_scores(row, index, source)
        if scores is None and require_scores:
            raise ValueError(
                f"{source}: row {index} has no score_chosen/score_rejected, neither as columns nor in 'metadata'; "
                f"load it with format='jsonl' or 'hf' to use the labels without scores"
            )
        if scores is not None and scores[0] == scores[1]:
            ties += 1
            continue
        pair = row_pair(row, index, source)
        if pair.chosen == pair.rejected:
            identical += 1
            continue
        pairs.append(pair)

    logger.info(
        "%s: %d labelled pairs; dropped %d pairs with tied scores and %d with identical completions",
        source, len(pairs), ties, identical,
    )
    return pairs


def ultrafeedback_pairs(rows: Sequence[Row], source: str = "rows") -> list[PreferencePair]:
    """UltraFeedback binarized pairs as labelled, tied scores dropped; every row must have scores."""
    return labelled_pairs(rows, source, require_scores=True)


def pairwise_length_pairs(rows: Sequence[Row], rule: LengthRule = LengthRule(), source: str = "rows") -> list[PreferencePair]:
    """Re-pair each row's two completions by length (see tsdpo.data.verbosity).

    The row's own label is ignored. Where the row has scores, their difference
    must be at most `rule.max_score_gap`.
    """
    require_row_columns(rows, ("chosen", "rejected"), source, "preference")

    pairs = []
    for index, row in enumerate(rows):
        labelled = row_pair(row, index, source)
        scores = row_scores(row, index, source) or (None, None)
        pair = length_pair(labelled.prompt, labelled.chosen, labelled.rejected, rule, *scores)
        if pair is not None:
            pairs.append(pair)

    logger.info("%s: %d length pairs out of %d rows", source, len(pairs), len(rows))
    return pairs
