"""Tests for the synthetic demo world: tasks, responses, scorers, datasets, tokenizer, pretraining."""

from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsdpo.data.pairs import PreferencePair
from tsdpo.world.datasets import helpfulness_pairs, pretraining_conversations, verbosity_pairs
from tsdpo.world.pretrain import (
    IGNORE_INDEX,
    PretrainConfig,
    build_model,
    conversation_loss,
    encode_conversations,
    pretrain_base_model,
)
from tsdpo.world.responses import HELPFULNESS_LEVELS, VERBOSITY_LEVELS, render_response
from tsdpo.world import responses
from tsdpo.world.scorers import (
    VERBOSITY_LEVEL_MAX_WORDS,
    helpfulness_level,
    score_helpfulness,
    score_verbosity,
    stated_answers,
    verbosity_level,
)
from tsdpo.world.tasks import KINDS, all_tasks, generate_tasks, sample_tasks, split_tasks
from tsdpo.world.tokenizer import train_tokenizer

N_LEVELS = len(VERBOSITY_LEVELS)


@pytest.fixture(scope="module")
def tasks():
    return all_tasks()


@pytest.fixture(scope="module")
def split():
    return split_tasks(seed=0)


@pytest.fixture(scope="module")
def tokenizer(split):
    conversations = pretraining_conversations(split.train, 5000, seed=0)
    return train_tokenizer([text for pair in conversations for text in pair], vocab_size=1536)


def find_task(tasks, question):
    matches = [task for task in tasks if task.question == question]
    assert len(matches) == 1, f"expected one task for {question!r}, found {len(matches)}"
    return matches[0]


def render_all_levels(task, seed=0):
    """Render every (helpfulness, verbosity) combination once."""
    rng = random.Random(seed)
    return {
        (helpfulness, verbosity): render_response(task, helpfulness, verbosity, rng)
        for helpfulness in HELPFULNESS_LEVELS
        for verbosity in range(N_LEVELS)
    }


# ---------------------------------------------------------------------------
# Tasks


def test_tasks_cover_all_kinds(tasks):
    counts = Counter(task.kind for task in tasks)
    assert set(counts) == set(KINDS)
    assert len(KINDS) >= 6


def test_task_questions_unique(tasks):
    questions = [task.question for task in tasks]
    assert len(set(questions)) == len(questions)


def test_task_answers_match_reference(tasks):
    cases = {
        "What is 3 plus 4?": "7",
        "What is 8 minus 3?": "5",
        "What is 6 times 7?": "42",
        "How many metres are in 3 kilometres?": "3000",
        "Convert 2 hours to minutes.": "120",
        "Which is larger, 7 or 3?": "7",
        "Which is smaller, 7 or 3?": "3",
        "What is the capital of France?": "Paris",
        "What is the capital of India?": "New Delhi",
        "What colour is the sky?": "blue",
        "What sound does a cow make?": "moo",
        "What does huge mean?": "very big",
        "How many letters are in elephant?": "8",
    }
    for question, answer in cases.items():
        assert find_task(tasks, question).answer == answer, question


def test_wrong_answers_exclude_correct_answer(tasks):
    for task in tasks:
        assert task.wrong_answers, task.question
        assert task.answer not in task.wrong_answers, task.question


def test_split_eval_questions_unseen_but_facts_trained(split):
    train_questions = {task.question for task in split.train}
    eval_questions = {task.question for task in split.eval}
    assert eval_questions
    assert not train_questions & eval_questions

    phrasings_per_fact = Counter(task.fact for task in split.train)
    for task in split.eval:
        assert phrasings_per_fact[task.fact] >= 2, task.fact


def test_split_covers_every_task(tasks, split):
    assert len(split.train) + len(split.eval) == len(tasks)
    assert {task.kind for task in split.eval} == set(KINDS)


def test_split_deterministic():
    assert split_tasks(seed=3) == split_tasks(seed=3)
    assert split_tasks(seed=3) != split_tasks(seed=4)


def test_generate_tasks_deterministic_and_balanced():
    first = generate_tasks(800, seed=5)
    assert first == generate_tasks(800, seed=5)
    assert first != generate_tasks(800, seed=6)
    assert set(Counter(task.kind for task in first).values()) == {100}


def test_sample_tasks_without_replacement(split):
    drawn = sample_tasks(split.eval, 50, random.Random(0), replace=False)
    assert len(drawn) == 50
    assert len({task.question for task in drawn}) == 50


# ---------------------------------------------------------------------------
# Scorers on hand-written responses


@pytest.mark.parametrize(
    ("question", "response", "expected"),
    [
        ("What is 3 plus 4?", "7.", 1.0),
        ("What is 3 plus 4?", "The answer is 7.", 1.0),
        ("What is 3 plus 4?", "It is 007!", 1.0),
        ("What is 3 plus 4?", "It is 7, or maybe 8.", 0.5),
        ("What is 3 plus 4?", "8.", 0.0),
        ("What is 3 plus 4?", "77", 0.0),
        ("What is 3 plus 4?", "", 0.0),
        ("What is 3 plus 4?", "I'm not sure I can help with that.", 0.0),
        ("What is 3 plus 4?", "the the . , 7 ??", 1.0),
        ("Which is larger, 7 or 3?", "The larger one is 7.", 1.0),
        ("Which is larger, 7 or 3?", "7 is larger than 3.", 0.5),
        ("How many metres are in 3 kilometres?", "That is 3000 metres.", 1.0),
        ("How many metres are in 3 kilometres?", "That is 300 metres.", 0.0),
        ("What is the capital of France?", "Paris.", 1.0),
        ("What is the capital of France?", "the capital is PARIS", 1.0),
        ("What is the capital of France?", "Paris or maybe Rome.", 0.5),
        ("What is the capital of France?", "Rome.", 0.0),
        ("What is the capital of France?", "Parisian food is nice.", 0.0),
        ("What is the capital of India?", "It is New\n  Delhi.", 1.0),
        ("What is the capital of India?", "Delhi.", 0.0),
        ("What does huge mean?", "Very big.", 1.0),
        ("What does huge mean?", "very small", 0.0),
        ("What sound does a cow make?", "Moo!", 1.0),
        ("What sound does a cow make?", "Mooing", 0.0),
        ("What colour is the sky?", "Blue, of course.", 1.0),
        ("What colour is the sky?", "Nice weather today.", 0.0),
    ],
)
def test_score_helpfulness_reference(tasks, question, response, expected):
    assert score_helpfulness(find_task(tasks, question), response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [("", 0.0), ("   ", 0.0), ("Paris.", 1.0), ("The answer is 7.", 4.0), (" a\nb\tc  ", 3.0)],
)
def test_score_verbosity_reference(response, expected):
    assert score_verbosity(response) == expected


def test_scorers_reject_non_strings(tasks):
    with pytest.raises(TypeError):
        score_helpfulness(tasks[0], None)
    with pytest.raises(TypeError):
        score_verbosity(None)


# ---------------------------------------------------------------------------
# Responses against the scorers, over the whole world


def test_rendered_responses_score_by_level(tasks):
    for task in tasks:
        for (helpfulness, verbosity), response in render_all_levels(task).items():
            expected = 1.0 if helpfulness == "correct" else 0.0
            assert score_helpfulness(task, response) == expected, (task.question, helpfulness, verbosity, response)


def test_templates_state_no_answers(tasks):
    templates = [
        *responses.OPENERS, *responses.CLOSERS, *responses.PLEASANTRIES, *responses.RECAPS,
        *responses.EVASIVE_BARE, *responses.EVASIONS, *responses.EXCUSES, *responses.EVASIVE_OPENERS,
        *responses.EVASIVE_CLOSERS, *responses.EVASIVE_RECAPS,
        *(sentence for topic in responses.OFF_TOPICS for sentence in topic),
    ]  # fmt: skip
    phrase_tasks = {task.kind: task for task in tasks if task.candidates}
    for template in templates:
        assert not any(char.isdigit() for char in template), template
        for task in phrase_tasks.values():
            assert not stated_answers(task, template), (template, task.kind)


def test_task_templates_state_only_answer(tasks):
    for task in tasks:
        for template in task.statements + task.rationales:
            sentence = template.format(answer=task.answer)
            assert stated_answers(task, sentence) == {task.answer}, (task.question, sentence)


def test_level_classifiers_recover_rendered_levels(tasks):
    for seed in (1, 2):
        for task in tasks:
            for (helpfulness, verbosity), response in render_all_levels(task, seed=seed).items():
                assert helpfulness_level(task, response) == helpfulness, response
                assert verbosity_level(response) == verbosity, response


def test_mean_words_increase_with_verbosity(tasks):
    rng = random.Random(0)
    for helpfulness in HELPFULNESS_LEVELS:
        means = [
            statistics.mean(score_verbosity(render_response(task, helpfulness, level, rng)) for task in tasks[::5])
            for level in range(N_LEVELS)
        ]
        assert all(a < b for a, b in zip(means, means[1:])), (helpfulness, means)


class ExtremeChoice(random.Random):
    """An rng whose choice() returns the element with the fewest or the most words."""

    def __init__(self, longest: bool):
        super().__init__(0)
        self.pick = max if longest else min

    def choice(self, seq):
        return self.pick(seq, key=lambda item: len(" ".join(item).split()) if isinstance(item, tuple) else len(item.split()))


def test_verbosity_word_ranges_exact(tasks, monkeypatch):
    # Word counts add up over independently chosen sentences, so the shortest
    # and longest choice at every step give the exact range of each level.
    # Off-topic sentences are chosen together per topic, so each topic is
    # checked on its own.
    lengths = {level: [] for level in range(N_LEVELS)}

    def record(task, helpfulness):
        for level in range(N_LEVELS):
            for longest in (False, True):
                response = render_response(task, helpfulness, level, ExtremeChoice(longest))
                lengths[level].append(score_verbosity(response))

    for task in tasks:
        for helpfulness in ("correct", "wrong", "evasive"):
            record(task, helpfulness)
    for topic in responses.OFF_TOPICS:
        monkeypatch.setattr(responses, "OFF_TOPICS", (topic,))
        record(tasks[0], "off_topic")

    for level, max_words in enumerate(VERBOSITY_LEVEL_MAX_WORDS):
        assert max(lengths[level]) <= max_words, level
        assert min(lengths[level + 1]) > max_words, level
    assert max(lengths[N_LEVELS - 1]) <= 50


def test_render_response_rejects_bad_levels(tasks):
    rng = random.Random(0)
    with pytest.raises(ValueError, match="helpfulness"):
        render_response(tasks[0], "rude", 0, rng)
    with pytest.raises(ValueError, match="verbosity"):
        render_response(tasks[0], "correct", N_LEVELS, rng)
    with pytest.raises(ValueError, match="correct answer"):
        render_response(tasks[0], "wrong", 0, rng, wrong_answer=tasks[0].answer)


# ---------------------------------------------------------------------------
# Datasets


def test_helpfulness_pairs_length_correlation(split):
    pairs = helpfulness_pairs(split.train, 1000, seed=0)
    longer = [score_verbosity(p.chosen) > score_verbosity(p.rejected) for p in pairs]
    fraction = sum(longer) / len(pairs)
    assert 0.6 <= fraction <= 0.7
    assert fraction == 0.65


def test_helpfulness_pairs_chosen_more_helpful(split):
    pairs = helpfulness_pairs(split.train, 500, seed=1)
    questions = {task.question: task for task in split.train}
    rejected_levels = Counter()
    for pair in pairs:
        assert isinstance(pair, PreferencePair)
        task = questions[pair.prompt]
        assert score_helpfulness(task, pair.chosen) == 1.0, pair
        assert score_helpfulness(task, pair.rejected) == 0.0, pair
        rejected_levels[helpfulness_level(task, pair.rejected)] += 1
    assert set(rejected_levels) == {"wrong", "evasive", "off_topic"}


def test_verbosity_pairs_hold_helpfulness_equal(split):
    pairs = verbosity_pairs(split.train, 500, seed=0)
    questions = {task.question: task for task in split.train}
    both_wrong = 0
    for pair in pairs:
        task = questions[pair.prompt]
        chosen_score = score_helpfulness(task, pair.chosen)
        assert chosen_score == score_helpfulness(task, pair.rejected), pair
        assert stated_answers(task, pair.chosen) == stated_answers(task, pair.rejected), pair
        assert score_verbosity(pair.chosen) > score_verbosity(pair.rejected), pair
        both_wrong += chosen_score == 0.0
    assert 0.1 <= both_wrong / len(pairs) <= 0.3


def test_pretraining_conversations_mix_levels(split):
    conversations = pretraining_conversations(split.train, 3000, seed=0)
    questions = {task.question: task for task in split.train}
    helpfulness = Counter(helpfulness_level(questions[q], r) for q, r in conversations)
    verbosity = Counter(verbosity_level(r) for _, r in conversations)

    assert abs(helpfulness["correct"] / 3000 - 0.5) < 0.04
    for level in ("wrong", "evasive", "off_topic"):
        assert abs(helpfulness[level] / 3000 - 1 / 6) < 0.03, (level, helpfulness)
    for level in range(N_LEVELS):
        assert abs(verbosity[level] / 3000 - 1 / N_LEVELS) < 0.03, (level, verbosity)


def test_eval_questions_absent_from_training_data(split):
    eval_questions = {task.question for task in split.eval}
    training_texts = set()
    for pair in helpfulness_pairs(split.train, 2000, seed=0) + verbosity_pairs(split.train, 2000, seed=0):
        training_texts.update((pair.prompt, pair.chosen, pair.rejected))
    for question, response in pretraining_conversations(split.train, 4000, seed=0):
        training_texts.update((question, response))
    assert not eval_questions & training_texts


def test_dataset_builders_deterministic(split):
    for build in (helpfulness_pairs, verbosity_pairs, pretraining_conversations):
        assert build(split.train, 200, seed=7) == build(split.train, 200, seed=7), build.__name__
        assert build(split.train, 200, seed=7) != build(split.train, 200, seed=8), build.__name__


def test_dataset_builders_reject_bad_fraction(split):
    with pytest.raises(ValueError, match="longer_fraction"):
        helpfulness_pairs(split.train, 10, seed=0, longer_fraction=1.5)


# ---------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_chat_template(tokenizer):
    messages = [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "7."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<|user|>What is 3 plus 4?<|end|><|assistant|>7.<|end|>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>What is 3 plus 4?<|end|><|assistant|>"


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    ids = tokenizer("<|user|>hi<|end|><|assistant|>")["input_ids"]
    assert ids[0] == 3
    assert ids[-2:] == [2, 4]


def test_tokenizer_plain_encoding_adds_no_special_tokens(tokenizer):
    ids = tokenizer("The answer is 7.")["input_ids"]
    assert not set(ids) & set(range(5))


def test_tokenizer_save_load_round_trip(tokenizer, tasks, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == tokenizer.chat_template
    assert len(loaded) == len(tokenizer) == 1536

    texts = []
    for task in tasks[::9]:
        texts.append(task.question)
        texts.extend(render_all_levels(task).values())
    texts += ["", "  two  spaces", "Zürich, naïve café!", "line\nbreak"]
    for text in texts:
        ids = loaded(text)["input_ids"]
        assert ids == tokenizer(text)["input_ids"], text
        assert loaded.decode(ids) == text, text

    messages = [{"role": "user", "content": "Name the capital of France."}, {"role": "assistant", "content": "Paris."}]
    assert loaded.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(messages, tokenize=False)


def test_tokenizer_assistant_mask(tokenizer):
    messages = [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "7."}]
    encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    response_ids = tokenizer("7.<|end|>")["input_ids"]
    masked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert masked == response_ids


def test_padded_responses_fit_64_tokens(tokenizer, tasks):
    rng = random.Random(0)
    longest = max(
        len(tokenizer(render_response(task, helpfulness, N_LEVELS - 1, rng))["input_ids"])
        for task in tasks[::3]
        for helpfulness in HELPFULNESS_LEVELS
    )
    # One more token for <|end|> must fit in a 64-token generation budget.
    assert longest <= 63


def test_train_tokenizer_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["hello"], vocab_size=100)


# ---------------------------------------------------------------------------
# Pretraining

TINY_CONFIG = dict(d_model=32, n_layers=2, n_heads=2, intermediate_size=64, batch_size=16, lr=1e-2, warmup_steps=5, seq_len=128)


def test_pretrain_config_validation():
    with pytest.raises(ValueError, match="n_heads"):
        PretrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=0.0)


def test_encode_conversations_masks_prompt(tokenizer):
    [(input_ids, labels)] = encode_conversations(tokenizer, [("What is 3 plus 4?", "7.")])
    prompt = tokenizer("<|user|>What is 3 plus 4?<|end|><|assistant|>")["input_ids"]
    response = tokenizer("7.<|end|>")["input_ids"]
    assert input_ids == prompt + response
    assert labels == [IGNORE_INDEX] * len(prompt) + response


def test_default_model_size(tokenizer):
    model = build_model(tokenizer, PretrainConfig())
    n_parameters = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_parameters <= 5_000_000
    assert model.config._attn_implementation == "eager"


def test_pretrain_tiny_reduces_loss_and_saves(split, tokenizer, tmp_path):
    conversations = pretraining_conversations(split.train, 800, seed=0)
    held_out = pretraining_conversations(split.train, 64, seed=1)
    config = PretrainConfig(steps=60, **TINY_CONFIG)

    initial_loss = conversation_loss(build_model(tokenizer, config), tokenizer, held_out)
    model = pretrain_base_model(conversations, tokenizer, config, progress=False)
    trained_loss = conversation_loss(model, tokenizer, held_out)
    assert trained_loss < initial_loss - 1.0, (initial_loss, trained_loss)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    input_ids = tokenizer("<|user|>What is 3 plus 4?<|end|><|assistant|>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits)


def test_pretrain_deterministic(split, tokenizer):
    conversations = pretraining_conversations(split.train, 200, seed=0)
    config = PretrainConfig(steps=5, **TINY_CONFIG)
    first = pretrain_base_model(conversations, tokenizer, config, progress=False)
    second = pretrain_base_model(conversations, tokenizer, config, progress=False)
    for (name, a), b in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(a, b), name


def test_pretrain_rejects_long_conversation(tokenizer):
    config = PretrainConfig(steps=1, **{**TINY_CONFIG, "seq_len": 8, "warmup_steps": 0})
    with pytest.raises(ValueError, match="seq_len"):
        pretrain_base_model([("What is 3 plus 4?", "The answer is 7.")], tokenizer, config, progress=False)
