"""Verbosity pairs from response length, for data without a verbosity rating.

Length is counted in words: the pieces of text between runs of whitespace
(`str.split()`), so "Paris, France." has two words. A pair is kept only when
the longer response is clearly longer: at least `min_ratio` times the words of
the shorter one AND at least `min_extra_words` more. The longer response is
the chosen one, so training on these pairs moves the model toward longer
responses.

Where the data scores each response (UltraFeedback's score, HelpSteer's
helpfulness rating), a pair is also kept only when the two scores differ by at
most `max_score_gap`, so that length, not quality, separates the two responses.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsdpo.data.pairs import PreferencePair


@dataclass(frozen=True)
class LengthRule:
    """Thresholds that make one response clearly longer than another."""

    min_ratio: float = 1.5  # longer words / shorter words
    min_extra_words: int = 20  # longer words - shorter words
    # Largest allowed score difference, in the dataset's own units: HelpSteer helpfulness is
    # rated 0-4 and UltraFeedback scores run from 1 to 10, so 1.0 is one step on either scale.
    max_score_gap: float = 1.0

    def __post_init__(self) -> None:
        if not self.min_ratio >= 1:
            raise ValueError(f"min_ratio={self.min_ratio} must be at least 1 (1 means no ratio condition)")
        if self.min_extra_words < 0:
            raise ValueError(f"min_extra_words={self.min_extra_words} must be >= 0 (0 means no word-count condition)")
        if not self.max_score_gap >= 0:
            raise ValueError(f"max_score_gap={self.max_score_gap} must be >= 0; use math.inf to ignore scores")


def word_count(text: str) -> int:
    """Count the whitespace-separated words of a text."""
    return len(text.split())


def is_clearly_longer(longer: str, shorter: str, rule: LengthRule) -> bool:
    """Check that `longer` has more words than `shorter` and passes both thresholds of `rule`."""
    long_words, short_words = word_count(longer), word_count(shorter)
    return (
        long_words > short_words
        and long_words >= rule.min_ratio * short_words
        and long_words - short_words >= rule.min_extra_words
    )


def length_pair(
    prompt: str | tuple,
    first: str,
    second: str,
    rule: LengthRule,
    first_score: float | None = None,
    second_score: float | None = None,
) -> PreferencePair | None:
    """Pair two responses to one prompt by length, the longer chosen, or return None.

    None means the lengths are too close for `rule`, or both scores are given
    and differ by more than `rule.max_score_gap`.
    """
    if first_score is not None and second_score is not None and abs(first_score - second_score) > rule.max_score_gap:
        return None
    if is_clearly_longer(first, second, rule):
        return PreferencePair(prompt, chosen=first, rejected=second)
    if is_clearly_longer(second, first, rule):
        return PreferencePair(prompt, chosen=second, rejected=first)
    return None
