"""Exact scorers for the two objectives of the demo world, and level classifiers.

The scorers accept any string, including garbled model output and the empty
string. They only read what a response states, so a correct answer buried in
unrelated text still counts.
"""

from __future__ import annotations

import re

from tsdpo.world.responses import EVASIONS, EVASIVE_BARE
from tsdpo.world.tasks import NUMBER, Task

_INTEGER = re.compile(r"\d+")

# Maximum word counts of verbosity levels 0 to 3. A rendered response at
# level k has at most VERBOSITY_LEVEL_MAX_WORDS[k] words, and one at level
# k + 1 has more, whatever the task and helpfulness level.
VERBOSITY_LEVEL_MAX_WORDS = (3, 10, 20, 33)


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _contains_phrase(text: str, phrase: str) -> bool:
    pattern = r"(?<![a-z])" + re.escape(_normalize(phrase)) + r"(?![a-z])"
    return re.search(pattern, text) is not None


def stated_answers(task: Task, response: str) -> set[str]:
    """Return the answers to `task` that `response` states, as canonical strings.

    For numeric tasks every maximal run of digits is a stated answer, read as
    an integer ("007" states "7"). Numbers copied from the question count
    too, so "7 is larger than 3" states both 7 and 3. For phrase tasks each of `task.candidates`
    found as a whole phrase, ignoring case and spacing, is a stated answer.
    """
    if task.answer_type == NUMBER:
        return {str(int(digits)) for digits in _INTEGER.findall(response)}
    text = _normalize(response)
    return {candidate for candidate in task.candidates if _contains_phrase(text, candidate)}


def score_helpfulness(task: Task, response: str) -> float:
    """Score how helpful `response` is as an answer to `task`, in [0, 1].

    Returns 1.0 when the response states the correct answer and no competing
    one, 0.5 when it states the correct answer next to a competing one (a
    hedge such as "7 or 8"), and 0.0 otherwise, as for wrong, evasive,
    off-topic and empty responses. Garbled text follows the same rule. See
    `stated_answers` for what counts as stating an answer.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    stated = stated_answers(task, response)
    if task.answer not in stated:
        return 0.0
    return 1.0 if len(stated) == 1 else 0.5


def score_verbosity(response: str) -> float:
    """Score the verbosity of `response` as its length in whitespace-separated words.

    Punctuation attached to a word does not count separately, so "Paris." is
    one word. The empty string scores 0.0.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    return float(len(response.split()))


def verbosity_level(response: str) -> int:
    """Classify `response` into a verbosity level, 0 to 4, by its word count."""
    words = score_verbosity(response)
    for level, max_words in enumerate(VERBOSITY_LEVEL_MAX_WORDS):
        if words <= max_words:
            return level
    return len(VERBOSITY_LEVEL_MAX_WORDS)


def helpfulness_level(task: Task, response: str) -> str:
    """Classify `response` into one of the levels in `responses.HELPFULNESS_LEVELS`.

    A response with the correct answer as its only stated answer is
    "correct", and one stating any answer otherwise is "wrong". Without a
    stated answer, a response that contains one of the evasion templates is
    "evasive", and anything else, garbled text included, is "off_topic".
    """
    stated = stated_answers(task, response)
    if stated:
        return "correct" if stated == {task.answer} else "wrong"
    text = _normalize(response)
    if any(_normalize(evasion) in text for evasion in EVASIONS + EVASIVE_BARE):
        return "evasive"
    return "off_topic"
