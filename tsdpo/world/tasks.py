"""Assistant tasks with exact answers: the questions of the synthetic demo world.

The world has eight kinds of task. Each task instance is one *fact* (an
arithmetic problem, a country, a word, ...) asked with one of five question
phrasings. `all_tasks` enumerates every (fact, phrasing) combination, and
`split_tasks` holds some combinations out for evaluation. Every fact keeps at
least two phrasings in training, so the knowledge behind an evaluation
question can be learned even though its exact wording is never trained on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

NUMBER = "number"
PHRASE = "phrase"


@dataclass(frozen=True)
class Task:
    """One question with its ground truth.

    `statements` and `rationales` are sentence templates with an `{answer}`
    slot. Responses fill them with the correct or a wrong answer, so no other
    text about the task has to be invented. No template mentions any value
    that the scorer would read as a competing answer.
    """

    kind: str
    question: str
    answer: str
    # NUMBER: every integer written in digits counts as a stated answer.
    # PHRASE: each string in `candidates` counts as a stated answer.
    answer_type: str
    # Every answer string the scorer looks for, correct one included (PHRASE tasks only).
    candidates: tuple[str, ...]
    # Plausible wrong answers, used to render wrong responses.
    wrong_answers: tuple[str, ...]
    # Short answer sentences, 2 to 5 words besides the answer.
    statements: tuple[str, ...]
    # Explanatory sentences that state the answer again with a reason.
    rationales: tuple[str, ...]
    # Identifies the underlying fact, shared by all phrasings of it, e.g. "capital:France".
    fact: str
    # Index of the question phrasing among the kind's phrasings.
    phrasing: int


@dataclass(frozen=True)
class TaskSplit:
    """Training tasks and held-out evaluation tasks with disjoint question strings."""

    train: tuple[Task, ...]
    eval: tuple[Task, ...]


# ---------------------------------------------------------------------------
# Fact tables

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Argentina": "Buenos Aires",
    "Russia": "Moscow",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Peru": "Lima",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
}

COLOURS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "a banana": "yellow",
    "coal": "black",
    "a tomato": "red",
    "milk": "white",
    "a lemon": "yellow",
    "chocolate": "brown",
    "a strawberry": "red",
    "a frog": "green",
    "an elephant": "grey",
    "a flamingo": "pink",
    "a pumpkin": "orange",
    "a crow": "black",
    "a carrot": "orange",
    "lavender": "purple",
    "the sea": "blue",
}

ANIMAL_SOUNDS = {
    "a dog": "woof",
    "a cat": "meow",
    "a cow": "moo",
    "a pig": "oink",
    "a duck": "quack",
    "a sheep": "baa",
    "a horse": "neigh",
    "a snake": "hiss",
    "a lion": "roar",
    "a bee": "buzz",
    "an owl": "hoot",
    "a hen": "cluck",
    "a frog": "croak",
    "a mouse": "squeak",
    "a wolf": "howl",
}

DEFINITIONS = {
    "huge": "very big",
    "tiny": "very small",
    "ancient": "very old",
    "rapid": "very fast",
    "freezing": "very cold",
    "scorching": "very hot",
    "exhausted": "very tired",
    "furious": "very angry",
    "delighted": "very happy",
    "damp": "slightly wet",
    "fragile": "easy to break",
    "silent": "making no sound",
    "brave": "not afraid",
    "crowded": "full of people",
    "rare": "hard to find",
    "ripe": "ready to eat",
}

COUNTING_WORDS = (
    "cat", "dog", "sun", "tree", "book", "fish", "milk", "apple", "house", "table",
    "chair", "bread", "water", "tiger", "music", "river", "garden", "pencil", "window",
    "rabbit", "flower", "planet", "school", "bottle", "kitchen", "teacher", "morning",
    "elephant", "mountain", "computer",
)  # fmt: skip

# (from plural, from singular, to plural, factor, factor in words)
UNIT_CONVERSIONS = (
    ("kilometres", "kilometre", "metres", 1000, "a thousand"),
    ("metres", "metre", "centimetres", 100, "a hundred"),
    ("kilograms", "kilogram", "grams", 1000, "a thousand"),
    ("litres", "litre", "millilitres", 1000, "a thousand"),
    ("hours", "hour", "minutes", 60, "sixty"),
    ("minutes", "minute", "seconds", 60, "sixty"),
    ("days", "day", "hours", 24, "twenty-four"),
    ("weeks", "week", "days", 7, "seven"),
    ("feet", "foot", "inches", 12, "twelve"),
    ("years", "year", "months", 12, "twelve"),
)

ARITHMETIC_RANGE = range(1, 10)
MULTIPLICATION_RANGE = range(2, 10)
COMPARISON_RANGE = range(1, 10)
CONVERSION_VALUES = range(2, 10)

# ---------------------------------------------------------------------------
# Question phrasings. Every kind has five, so `split_tasks` can hold some out
# and still train on at least two.

ARITHMETIC_QUESTIONS = {
    "+": (
        "What is {a} plus {b}?",
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "How much is {a} plus {b}?",
        "What do you get when you add {a} and {b}?",
    ),
    "-": (
        "What is {a} minus {b}?",
        "What is {a} - {b}?",
        "Subtract {b} from {a}.",
        "How much is {a} take away {b}?",
        "What do you get when you take {b} from {a}?",
    ),
    "*": (
        "What is {a} times {b}?",
        "What is {a} x {b}?",
        "Multiply {a} by {b}.",
        "How much is {a} multiplied by {b}?",
        "What do you get when you multiply {a} and {b}?",
    ),
}
CONVERSION_QUESTIONS = (
    "How many {to} are in {value} {source}?",
    "Convert {value} {source} to {to}.",
    "What is {value} {source} in {to}?",
    "{value} {source} is how many {to}?",
    "How many {to} make up {value} {source}?",
)
COMPARISON_QUESTIONS = {
    "larger": (
        "Which is larger, {a} or {b}?",
        "Which number is bigger: {a} or {b}?",
        "Of {a} and {b}, which is greater?",
        "Tell me the larger of {a} and {b}.",
        "Is {a} or {b} the larger number?",
    ),
    "smaller": (
        "Which is smaller, {a} or {b}?",
        "Which number is less: {a} or {b}?",
        "Of {a} and {b}, which is lower?",
        "Tell me the smaller of {a} and {b}.",
        "Is {a} or {b} the smaller number?",
    ),
}
CAPITAL_QUESTIONS = (
    "What is the capital of {country}?",
    "Which city is the capital of {country}?",
    "Name the capital of {country}.",
    "What city is the capital of {country}?",
    "Tell me the capital city of {country}.",
)
COLOUR_QUESTIONS = (
    "What colour is {thing}?",
    "What is the colour of {thing}?",
    "Which colour is {thing} usually?",
    "Tell me the colour of {thing}.",
    "What colour do you see when you look at {thing}?",
)
SOUND_QUESTIONS = (
    "What sound does {animal} make?",
    "What noise does {animal} make?",
    "What does {animal} say?",
    "How does {animal} sound?",
    "Which sound comes from {animal}?",
)
DEFINITION_QUESTIONS = (
    "What does {word} mean?",
    "What is the meaning of {word}?",
    "Define the word {word}.",
    "What does it mean if something is {word}?",
    "Can you tell me what {word} means?",
)
COUNTING_QUESTIONS = (
    "How many letters are in {word}?",
    "How many letters does the word {word} have?",
    "Count the letters in {word}.",
    "How many letters make up the word {word}?",
    "How long is the word {word} in letters?",
)

KINDS = (
    "arithmetic",
    "conversion",
    "comparison",
    "capital",
    "colour",
    "sound",
    "definition",
    "letter_count",
)


# ---------------------------------------------------------------------------
# Task construction, one function per kind. Each returns one Task per phrasing.


def _numeric_tasks(
    kind: str,
    fact: str,
    questions: Sequence[str],
    answer: int,
    wrong: Sequence[int],
    statements: tuple[str, ...],
    rationales: tuple[str, ...],
) -> list[Task]:
    wrong_answers = tuple(str(w) for w in sorted(set(wrong)) if w >= 0 and w != answer)
    return [
        Task(
            kind=kind,
            question=question,
            answer=str(answer),
            answer_type=NUMBER,
            candidates=(),
            wrong_answers=wrong_answers,
            statements=statements,
            rationales=rationales,
            fact=fact,
            phrasing=index,
        )
        for index, question in enumerate(questions)
    ]


def _phrase_tasks(
    kind: str,
    fact: str,
    questions: Sequence[str],
    answer: str,
    candidates: tuple[str, ...],
    statements: tuple[str, ...],
    rationales: tuple[str, ...],
) -> list[Task]:
    wrong_answers = tuple(c for c in candidates if c != answer)
    return [
        Task(
            kind=kind,
            question=question,
            answer=answer,
            answer_type=PHRASE,
            candidates=candidates,
            wrong_answers=wrong_answers,
            statements=statements,
            rationales=rationales,
            fact=fact,
            phrasing=index,
        )
        for index, question in enumerate(questions)
    ]


_ARITHMETIC_RATIONALES = {
    "+": (
        "Adding the two numbers together gives {answer}.",
        "The two numbers add up to {answer}.",
    ),
    "-": (
        "Taking the second number away from the first leaves {answer}.",
        "The difference between the two numbers is {answer}.",
    ),
    "*": (
        "Multiplying the two numbers together gives {answer}.",
        "The product of the two numbers is {answer}.",
    ),
}
_ARITHMETIC_STATEMENTS = (
    "The answer is {answer}.",
    "That comes to {answer}.",
    "The result is {answer}.",
    "It works out to {answer}.",
)


def _arithmetic_tasks(a: int, op: str, b: int) -> list[Task]:
    if op == "+":
        answer, slips = a + b, (a * b, a + b + 10)
    elif op == "-":
        answer, slips = a - b, (a + b,)
    else:
        answer, slips = a * b, (a + b, a * (b + 1), (a + 1) * b)
    questions = [q.format(a=a, b=b) for q in ARITHMETIC_QUESTIONS[op]]
    wrong = (answer - 2, answer - 1, answer + 1, answer + 2, *slips)
    return _numeric_tasks(
        "arithmetic", f"arithmetic:{a}{op}{b}", questions, answer, wrong,
        _ARITHMETIC_STATEMENTS, _ARITHMETIC_RATIONALES[op],
    )  # fmt: skip


def _conversion_tasks(conversion: tuple, value: int) -> list[Task]:
    source, source_singular, target, factor, factor_words = conversion
    answer = value * factor
    questions = [q.format(value=value, source=source, to=target) for q in CONVERSION_QUESTIONS]
    wrong = (answer + factor, answer - factor, value * factor // 10, value * factor * 10, value + factor)
    statements = (
        f"That is {{answer}} {target}.",
        f"It comes to {{answer}} {target}.",
        f"The answer is {{answer}} {target}.",
    )
    rationales = (
        f"Each {source_singular} has {factor_words} {target}, so that makes {{answer}} {target}.",
        f"There are {factor_words} {target} in one {source_singular}, which gives {{answer}} {target}.",
    )
    return _numeric_tasks(
        "conversion", f"conversion:{value} {source}->{target}", questions, answer, wrong,
        statements, rationales,
    )  # fmt: skip


def _comparison_tasks(a: int, b: int, direction: str) -> list[Task]:
    answer, other = (max(a, b), min(a, b)) if direction == "larger" else (min(a, b), max(a, b))
    questions = [q.format(a=a, b=b) for q in COMPARISON_QUESTIONS[direction]]
    statements = (
        f"The {direction} number is {{answer}}.",
        f"The {direction} one is {{answer}}.",
        "The answer is {answer}.",
    )
    rationales = (
        f"Of the two numbers given, {{answer}} is the {direction} one.",
        f"If you put the two numbers side by side, {{answer}} is {direction}.",
    )
    return _numeric_tasks(
        "comparison", f"comparison:{direction}({a},{b})", questions, answer, (other,),
        statements, rationales,
    )  # fmt: skip


def _capital_tasks(country: str) -> list[Task]:
    questions = [q.format(country=country) for q in CAPITAL_QUESTIONS]
    statements = ("The capital is {answer}.", "It is the city of {answer}.", "The answer is {answer}.")
    rationales = (
        f"{{answer}} is the capital city of {country}.",
        f"The government of {country} is based in {{answer}}.",
    )
    return _phrase_tasks(
        "capital", f"capital:{country}", questions, CAPITALS[country],
        tuple(sorted(set(CAPITALS.values()))), statements, rationales,
    )  # fmt: skip


def _colour_tasks(thing: str) -> list[Task]:
    questions = [q.format(thing=thing) for q in COLOUR_QUESTIONS]
    statements = ("The colour is {answer}.", "It is usually {answer}.", "The answer is {answer}.")
    rationales = (
        f"If you look at {thing}, you will see that it is {{answer}}.",
        f"Most people would say that {thing} is {{answer}}.",
    )
    return _phrase_tasks(
        "colour", f"colour:{thing}", questions, COLOURS[thing],
        tuple(sorted(set(COLOURS.values()))), statements, rationales,
    )  # fmt: skip


def _sound_tasks(animal: str) -> list[Task]:
    questions = [q.format(animal=animal) for q in SOUND_QUESTIONS]
    statements = ("It makes the sound {answer}.", f"{animal} goes {{answer}}.", "The answer is {answer}.")
    rationales = (
        f"The sound that {animal} makes is {{answer}}.",
        f"If you listen to {animal}, you will hear {{answer}}.",
    )
    return _phrase_tasks(
        "sound", f"sound:{animal}", questions, ANIMAL_SOUNDS[animal],
        tuple(sorted(set(ANIMAL_SOUNDS.values()))), statements, rationales,
    )  # fmt: skip


def _definition_tasks(word: str) -> list[Task]:
    questions = [q.format(word=word) for q in DEFINITION_QUESTIONS]
    statements = ("It means {answer}.", f"The word {word} means {{answer}}.", "The meaning is {answer}.")
    rationales = (
        f"If something is {word}, it is {{answer}}.",
        f"People use the word {word} to mean {{answer}}.",
    )
    return _phrase_tasks(
        "definition", f"definition:{word}", questions, DEFINITIONS[word],
        tuple(sorted(set(DEFINITIONS.values()))), statements, rationales,
    )  # fmt: skip


def _letter_count_tasks(word: str) -> list[Task]:
    answer = len(word)
    questions = [q.format(word=word) for q in COUNTING_QUESTIONS]
    statements = ("It has {answer} letters.", "There are {answer} letters.", "The word has {answer} letters.")
    rationales = (
        f"If you spell out {word}, you count {{answer}} letters.",
        f"The word {word} is spelled with {{answer}} letters.",
    )
    wrong = (answer - 2, answer - 1, answer + 1, answer + 2)
    return _numeric_tasks(
        "letter_count", f"letter_count:{word}", questions, answer, [w for w in wrong if w > 0],
        statements, rationales,
    )  # fmt: skip


def all_tasks() -> list[Task]:
    """Enumerate every task of the world: each fact asked in each phrasing, in a fixed order."""
    tasks: list[Task] = []
    for a in ARITHMETIC_RANGE:
        for b in ARITHMETIC_RANGE:
            tasks += _arithmetic_tasks(a, "+", b)
            if a > b:
                tasks += _arithmetic_tasks(a, "-", b)
    for a in MULTIPLICATION_RANGE:
        for b in MULTIPLICATION_RANGE:
            tasks += _arithmetic_tasks(a, "*", b)
    for conversion in UNIT_CONVERSIONS:
        for value in CONVERSION_VALUES:
            tasks += _conversion_tasks(conversion, value)
    for a in COMPARISON_RANGE:
        for b in COMPARISON_RANGE:
            if a != b:
                tasks += _comparison_tasks(a, b, "larger")
                tasks += _comparison_tasks(a, b, "smaller")
    for country in CAPITALS:
        tasks += _capital_tasks(country)
    for thing in COLOURS:
        tasks += _colour_tasks(thing)
    for animal in ANIMAL_SOUNDS:
        tasks += _sound_tasks(animal)
    for word in DEFINITIONS:
        tasks += _definition_tasks(word)
    for word in COUNTING_WORDS:
        tasks += _letter_count_tasks(word)
    return tasks


# ---------------------------------------------------------------------------
# Splitting and sampling

MIN_TRAIN_PHRASINGS = 2


def split_tasks(seed: int = 0, eval_fraction: float = 0.25) -> TaskSplit:
    """Hold out (fact, phrasing) combinations for evaluation.

    Each combination is held out with probability `eval_fraction`, except
    that every fact keeps at least `MIN_TRAIN_PHRASINGS` phrasings in
    training. Evaluation questions are therefore unseen strings about facts
    that training still teaches.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}; use e.g. 0.25")
    rng = random.Random(seed)
    by_fact: dict[str, list[Task]] = {}
    for task in all_tasks():
        by_fact.setdefault(task.fact, []).append(task)

    train: list[Task] = []
    held_out: list[Task] = []
    for phrasings in by_fact.values():
        order = list(phrasings)
        rng.shuffle(order)
        n_train = len(order)
        for task in order:
            if n_train > MIN_TRAIN_PHRASINGS and rng.random() < eval_fraction:
                held_out.append(task)
                n_train -= 1
            else:
                train.append(task)

    key = attrgetter("fact", "phrasing")
    return TaskSplit(train=tuple(sorted(train, key=key)), eval=tuple(sorted(held_out, key=key)))


def kind_quotas(kind_sizes: dict[str, int], n: int, alpha: float) -> dict[str, int]:
    """Split `n` draws over kinds in proportion to `size ** alpha`.

    `alpha=0` gives every kind an equal share and `alpha=1` a share
    proportional to its size. Shares are rounded by the largest remainder
    method, so the quotas sum to `n` exactly.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}; use 0 for equal shares per kind")
    kinds = sorted(kind_sizes)
    weights = [kind_sizes[kind] ** alpha for kind in kinds]
    exact = [n * weight / sum(weights) for weight in weights]
    quotas = [int(share) for share in exact]
    by_remainder = sorted(range(len(kinds)), key=lambda i: (quotas[i] - exact[i], i))
    for i in by_remainder[: n - sum(quotas)]:
        quotas[i] += 1
    return dict(zip(kinds, quotas))


def sample_tasks(
    tasks: Sequence[Task],
    n: int,
    rng: random.Random,
    replace: bool = True,
    kind_alpha: float = 0.0,
) -> list[Task]:
    """Draw `n` tasks from `tasks` in a shuffled order.

    Each kind gets a fixed number of draws from `kind_quotas` with
    `kind_alpha`: the default 0 gives every kind an equal share whatever its
    size, and 1 makes every task equally likely. Within a kind, tasks are
    drawn uniformly, without repeats when `replace=False`.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not tasks:
        raise ValueError("tasks is empty; pass e.g. split_tasks().train")

    by_kind: dict[str, list[Task]] = {}
    for task in tasks:
        by_kind.setdefault(task.kind, []).append(task)
    quotas = kind_quotas({kind: len(group) for kind, group in by_kind.items()}, n, kind_alpha)

    drawn: list[Task] = []
    for kind, quota in quotas.items():
        group = by_kind[kind]
        if replace:
            drawn += [rng.choice(group) for _ in range(quota)]
        elif quota > len(group):
            raise ValueError(
                f"cannot draw {quota} distinct {kind!r} tasks from {len(group)}; "
                "pass replace=True or a smaller n"
            )
        else:
            drawn += rng.sample(group, quota)
    rng.shuffle(drawn)
    return drawn


def generate_tasks(n: int, seed: int, replace: bool = True, kind_alpha: float = 0.0) -> list[Task]:
    """Draw `n` tasks from the whole world with `random.Random(seed)`; see `sample_tasks`."""
    return sample_tasks(all_tasks(), n, random.Random(seed), replace=replace, kind_alpha=kind_alpha)
