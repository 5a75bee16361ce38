"""Assistant responses at a chosen helpfulness level and verbosity level.

Helpfulness levels, best first:

- "correct": states the right answer.
- "wrong": states a plausible wrong answer with the same confidence.
- "evasive": declines to answer.
- "off_topic": talks about something unrelated.

Verbosity levels run from 0 ("bare", just the answer) to 4 ("padded",
pleasantries, an explanation and a recap, at most about 50 words). For a
fixed task and helpfulness level, every response at verbosity level k has
fewer words than every response at level k + 1, whatever templates the rng
picks. The dataset builders rely on this to order pairs by length.

No template contains a digit or a value from the fact tables, so the only
answer a response states is the one rendered into it.
"""

from __future__ import annotations

import random

from tsdpo.world.tasks import Task

HELPFULNESS_LEVELS = ("correct", "wrong", "evasive", "off_topic")
VERBOSITY_LEVELS = ("bare", "short", "explained", "friendly", "padded")

OPENERS = (
    "Thanks for the question!",
    "What a great question!",
    "Happy to help with this.",
    "Good question, let me explain.",
    "Sure, happy to help.",
)
CLOSERS = (
    "I hope this helps you out.",
    "Let me know if you need more.",
    "Feel free to ask me more questions.",
    "I hope that answers your question.",
)
PLEASANTRIES = (
    "I really enjoy questions like this one.",
    "This is a fun thing to think about.",
    "Questions like this come up quite often.",
    "It is a pleasure to help you today.",
)
RECAPS = (
    "So, once again, the answer is {answer}.",
    "To sum up, it is {answer}.",
    "In short, the answer is {answer}.",
)

EVASIVE_BARE = ("Not sure.", "No idea.", "Hard to say.")
EVASIONS = (
    "I'm not sure I can help with that.",
    "Sorry, I do not know that one.",
    "I cannot really answer that.",
    "That is not something I can answer.",
)
EXCUSES = (
    "I would rather not guess and risk being wrong.",
    "You may want to ask someone else about this.",
    "I do not have enough information to be certain.",
)
EVASIVE_OPENERS = (
    "Thanks for the question.",
    "Hmm, let me think about that.",
    "That is an interesting question.",
)
EVASIVE_CLOSERS = (
    "Sorry I could not be more useful.",
    "I hope you can understand my position.",
    "Perhaps someone else can help you.",
)
EVASIVE_RECAPS = (
    "Again, I am not sure about this one.",
    "To sum up, I cannot give an answer.",
    "So I will have to pass on this one.",
)

# Off-topic replies: (bare, main sentence, detail, recap) about one unrelated topic.
OFF_TOPICS = (
    (
        "I like gardening.",
        "I have been thinking about gardening lately.",
        "Planting seeds in spring is a calm way to spend a weekend.",
        "Anyway, gardening really is a lovely hobby.",
    ),
    (
        "Tea is nice.",
        "Let me tell you about my favourite tea.",
        "A warm cup in the afternoon always makes me feel relaxed.",
        "Anyway, a good cup of tea is lovely.",
    ),
    (
        "Trains are fun.",
        "Have you ever travelled by train?",
        "Watching the countryside roll past the window is a real treat.",
        "Anyway, trains are a lovely way to travel.",
    ),
    (
        "Music is great.",
        "I have been listening to a lot of music.",
        "A good song can lift your mood on a slow day.",
        "Anyway, music makes everything a bit better.",
    ),
    (
        "Nice weather today.",
        "The weather has been lovely this week.",
        "It is a good time to go outside and enjoy some fresh air.",
        "Anyway, I hope the weather stays this nice.",
    ),
    (
        "Books are wonderful.",
        "I recently started reading a new novel.",
        "Getting lost in a good story is one of life's simple joys.",
        "Anyway, reading is a great way to relax.",
    ),
)


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _join(*sentences: str) -> str:
    return " ".join(_capitalize(s) for s in sentences)


def _answer_response(task: Task, answer: str, verbosity: int, rng: random.Random) -> str:
    if verbosity == 0:
        return _capitalize(f"{answer}.")
    statement = rng.choice(task.statements).format(answer=answer)
    if verbosity == 1:
        return _join(statement)
    rationale = rng.choice(task.rationales).format(answer=answer)
    if verbosity == 2:
        return _join(statement, rationale)
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    if verbosity == 3:
        return _join(opener, statement, rationale, closer)
    pleasantry = rng.choice(PLEASANTRIES)
    recap = rng.choice(RECAPS).format(answer=answer)
    return _join(opener, pleasantry, statement, rationale, recap, closer)


def _evasive_response(verbosity: int, rng: random.Random) -> str:
    if verbosity == 0:
        return rng.choice(EVASIVE_BARE)
    evasion = rng.choice(EVASIONS)
    if verbosity == 1:
        return evasion
    excuse = rng.choice(EXCUSES)
    if verbosity == 2:
        return _join(evasion, excuse)
    opener, closer = rng.choice(EVASIVE_OPENERS), rng.choice(EVASIVE_CLOSERS)
    if verbosity == 3:
        return _join(opener, evasion, excuse, closer)
    pleasantry, recap = rng.choice(PLEASANTRIES), rng.choice(EVASIVE_RECAPS)
    return _join(opener, pleasantry, evasion, excuse, recap, closer)


def _off_topic_response(verbosity: int, rng: random.Random) -> str:
    bare, main, detail, recap = rng.choice(OFF_TOPICS)
    if verbosity == 0:
        return bare
    if verbosity == 1:
        return main
    if verbosity == 2:
        return _join(main, detail)
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    if verbosity == 3:
        return _join(opener, main, detail, closer)
    return _join(opener, rng.choice(PLEASANTRIES), main, detail, recap, closer)


def render_response(
    task: Task,
    helpfulness: str,
    verbosity: int,
    rng: random.Random,
    wrong_answer: str | None = None,
) -> str:
    """Render a response to `task` at one helpfulness and verbosity level.

    `rng` picks the templates, and for "wrong" responses also the wrong answer
    from `task.wrong_answers` unless `wrong_answer` fixes it.
    """
    if helpfulness not in HELPFULNESS_LEVELS:
        raise ValueError(f"unknown helpfulness level {helpfulness!r}; expected one of {HELPFULNESS_LEVELS}")
    if not isinstance(verbosity, int) or not 0 <= verbosity < len(VERBOSITY_LEVELS):
        raise ValueError(f"verbosity must be an int in [0, {len(VERBOSITY_LEVELS) - 1}], got {verbosity!r}")
    if wrong_answer is not None and helpfulness != "wrong":
        raise ValueError(f"wrong_answer is only used with helpfulness 'wrong', got {helpfulness!r}")
    if wrong_answer is not None and wrong_answer == task.answer:
        raise ValueError(f"wrong_answer {wrong_answer!r} is the correct answer to {task.question!r}")

    if helpfulness == "correct":
        return _answer_response(task, task.answer, verbosity, rng)
    if helpfulness == "wrong":
        answer = wrong_answer if wrong_answer is not None else rng.choice(task.wrong_answers)
        return _answer_response(task, answer, verbosity, rng)
    if helpfulness == "evasive":
        return _evasive_response(verbosity, rng)
    return _off_topic_response(verbosity, rng)
