"""Preference-pair loaders on small files written by the tests: layouts, objectives, errors, splits."""

import json
import logging
import socket
import sys

import pytest

from tsdpo.data import DataConfig, LengthRule, PreferencePair, load_pair_split, load_pairs, split_by_prompt
from tsdpo.data.helpsteer import helpsteer_length_pairs, helpsteer_rating_pairs
from tsdpo.data.pairwise import labelled_pairs, pairwise_length_pairs, ultrafeedback_pairs
from tsdpo.data.verbosity import length_pair, word_count


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet(path, rows):
    pq = pytest.importorskip("pyarrow.parquet", reason="writing Parquet test files needs pyarrow")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def words(count, word="word"):
    return " ".join([word] * count)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture
def no_network(monkeypatch):
    """Fail any socket connection to a host other than loopback."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


TEXT_ROWS = [
    {"prompt": "What is two plus three?", "chosen": "Five.", "rejected": "Six."},
    {"prompt": "Name the capital of France.", "chosen": "Paris.", "rejected": "Lyon."},
]
TEXT_PAIRS = [
    PreferencePair("What is two plus three?", "Five.", "Six."),
    PreferencePair("Name the capital of France.", "Paris.", "Lyon."),
]

# trl-lib/ultrafeedback_binarized layout: no prompt column, message lists that repeat the user turn.
CONVERSATIONAL_ROWS = [
    {
        "chosen": [user("What is two plus three?"), assistant("Five.")],
        "rejected": [user("What is two plus three?"), assistant("Six.")],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    },
    {
        "chosen": [user("Name the capital of France."), assistant("Paris.")],
        "rejected": [user("Name the capital of France."), assistant("Lyon.")],
        "score_chosen": 9.0,
        "score_rejected": 2.5,
    },
]


# Generic JSONL and Parquet


def test_jsonl_text_rows(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", TEXT_ROWS)
    assert load_pairs(path) == TEXT_PAIRS
    assert load_pairs(path, format="jsonl", objective="preference") == TEXT_PAIRS


def test_jsonl_conversational_implicit_prompt(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", CONVERSATIONAL_ROWS)
    assert load_pairs(path) == TEXT_PAIRS


def test_conversation_keeps_earlier_turns(tmp_path):
    history = [{"role": "system", "content": "Be brief."}, user("Hi."), assistant("Hello."), user("Capital of France?")]
    row = {"chosen": history + [assistant("Paris.")], "rejected": history + [assistant("Lyon.")]}
    [pair] = load_pairs(write_jsonl(tmp_path / "pairs.jsonl", [row]))
    assert pair.prompt == tuple(history)
    assert pair.chosen == "Paris."
    assert pair.rejected == "Lyon."


def test_explicit_prompt_with_message_completions(tmp_path):
    rows = [
        # HuggingFaceH4 layout: the completions repeat the prompt turn.
        {"prompt": "Capital of France?", "chosen": [user("Capital of France?"), assistant("Paris.")],
         "rejected": [user("Capital of France?"), assistant("Lyon.")]},
        # Completions that hold the answer only, with the prompt as a message list.
        {"prompt": [user("Two plus three?")], "chosen": [assistant("Five.")], "rejected": [assistant("Six.")]},
    ]
    assert load_pairs(write_jsonl(tmp_path / "pairs.jsonl", rows)) == [
        PreferencePair("Capital of France?", "Paris.", "Lyon."),
        PreferencePair("Two plus three?", "Five.", "Six."),
    ]


def test_parquet_conversational_rows(tmp_path):
    path = write_parquet(tmp_path / "pairs.parquet", CONVERSATIONAL_ROWS)
    assert load_pairs(path) == TEXT_PAIRS
    assert load_pairs(path, format="parquet") == TEXT_PAIRS


def test_parquet_text_rows(tmp_path):
    assert load_pairs(write_parquet(tmp_path / "pairs.parquet", TEXT_ROWS)) == TEXT_PAIRS


def test_limit_keeps_first_pairs(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", TEXT_ROWS)
    assert load_pairs(path, limit=1) == TEXT_PAIRS[:1]


# HelpSteer

HELPSTEER_ROWS = [
    {"prompt": "P1", "response": "a", "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1},
    {"prompt": "P1", "response": "b", "helpfulness": 2, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 3},
    {"prompt": "P1", "response": "c", "helpfulness": 2, "correctness": 1, "coherence": 4, "complexity": 1, "verbosity": 2},
    {"prompt": "P2", "response": "d", "helpfulness": 1, "correctness": 3, "coherence": 3, "complexity": 0, "verbosity": 0},
    {"prompt": "P2", "response": "e", "helpfulness": 3, "correctness": 3, "coherence": 3, "complexity": 0, "verbosity": 4},
    # Same text as "e" with another rating: a response cannot be preferred to itself.
    {"prompt": "P2", "response": "e", "helpfulness": 0, "correctness": 3, "coherence": 3, "complexity": 0, "verbosity": 4},
]


def test_helpsteer_pairs_by_rating(caplog):
    with caplog.at_level(logging.INFO, logger="tsdpo.data.helpsteer"):
        pairs = helpsteer_rating_pairs(HELPSTEER_ROWS, "helpfulness")
    assert pairs == [
        PreferencePair("P1", "a", "b"),
        PreferencePair("P1", "a", "c"),
        PreferencePair("P2", "e", "d"),
        PreferencePair("P2", "d", "e"),
    ]
    assert "dropped 1 tied pairs and 1 pairs of identical responses" in caplog.text


def test_helpsteer_verbosity_uses_rating():
    assert helpsteer_rating_pairs(HELPSTEER_ROWS, "verbosity") == [
        PreferencePair("P1", "b", "a"),
        PreferencePair("P1", "c", "a"),
        PreferencePair("P1", "b", "c"),
        PreferencePair("P2", "e", "d"),
        PreferencePair("P2", "e", "d"),
    ]


def test_helpsteer_format_reads_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "helpsteer.jsonl", HELPSTEER_ROWS)
    expected = helpsteer_rating_pairs(HELPSTEER_ROWS, "correctness")
    assert load_pairs(path, format="helpsteer", objective="correctness") == expected
    assert load_pairs(path, objective="correctness") == expected  # layout recognized from the columns


def test_helpsteer_unknown_attribute():
    with pytest.raises(ValueError, match=r"unknown HelpSteer attribute 'honesty'.*helpfulness"):
        helpsteer_rating_pairs(HELPSTEER_ROWS, "honesty")


def test_helpsteer_missing_rating_column(tmp_path):
    rows = [{key: value for key, value in row.items() if key != "verbosity"} for row in HELPSTEER_ROWS]
    path = write_jsonl(tmp_path / "helpsteer.jsonl", rows)
    with pytest.raises(ValueError, match=r"helpsteer\.jsonl: row 0 has no column 'verbosity'"):
        load_pairs(path, format="helpsteer", objective="verbosity")


def test_helpsteer_length_pairs_hold_helpfulness():
    rows = [
        {"prompt": "P", "response": words(20), "helpfulness": 3},
        {"prompt": "P", "response": words(50), "helpfulness": 3},
        {"prompt": "P", "response": words(60), "helpfulness": 1},  # gap of 2 to the 20-word response
    ]
    assert helpsteer_length_pairs(rows) == [PreferencePair("P", words(50), words(20))]


# UltraFeedback and scored pairs

ULTRAFEEDBACK_ROWS = [
    {"prompt": "Q1", "chosen": "good", "rejected": "bad", "metadata": {"score_chosen": 9.0, "score_rejected": 4.0}},
    {"prompt": "Q2", "chosen": "tie a", "rejected": "tie b", "metadata": {"score_chosen": 7.0, "score_rejected": 7.0}},
    {"prompt": "Q3", "chosen": "same", "rejected": "same", "metadata": {"score_chosen": 8.0, "score_rejected": 6.0}},
    {"prompt": "Q4", "chosen": "fine", "rejected": "poor", "score_chosen": 6.5, "score_rejected": 6.0},
]


def test_ultrafeedback_drops_logged_ties(caplog):
    with caplog.at_level(logging.INFO, logger="tsdpo.data.pairwise"):
        pairs = ultrafeedback_pairs(ULTRAFEEDBACK_ROWS, source="uf.jsonl")
    assert pairs == [PreferencePair("Q1", "good", "bad"), PreferencePair("Q4", "fine", "poor")]
    assert "uf.jsonl: 2 labelled pairs; dropped 1 pairs with tied scores and 1 with identical completions" in caplog.text


def test_ultrafeedback_message_lists(tmp_path):
    rows = CONVERSATIONAL_ROWS + [
        {"chosen": [user("Q"), assistant("x")], "rejected": [user("Q"), assistant("y")], "score_chosen": 5.0,
         "score_rejected": 5.0},
    ]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    assert load_pairs(path, format="ultrafeedback") == TEXT_PAIRS


def test_ultrafeedback_requires_scores(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", TEXT_ROWS)
    with pytest.raises(ValueError, match=r"uf\.jsonl: row 0 has no score_chosen/score_rejected"):
        load_pairs(path, format="ultrafeedback")


def test_unscored_rows_keep_every_label():
    assert labelled_pairs(TEXT_ROWS) == TEXT_PAIRS


# Verbosity by length


def test_word_count_splits_on_whitespace():
    assert word_count("Paris, France.\n\nIt is  big.") == 5
    assert word_count("") == 0


@pytest.mark.parametrize(
    ("first_words", "second_words", "expected"),
    [
        (45, 20, "first"),  # ratio 2.25 and 25 more words
        (20, 45, "second"),
        (30, 20, None),  # ratio 1.5 but only 10 more words
        (29, 10, None),  # ratio 2.9 but only 19 more words
        (30, 10, "first"),  # exactly 20 more words, ratio 3
        (59, 40, None),  # 19 more words, ratio 1.475
        (60, 40, "first"),  # exactly ratio 1.5 and 20 more words
        (20, 20, None),
    ],
)
def test_length_pair_thresholds(first_words, second_words, expected):
    first, second = words(first_words, "one"), words(second_words, "two")
    pair = length_pair("P", first, second, LengthRule())
    if expected is None:
        assert pair is None
    else:
        chosen, rejected = (first, second) if expected == "first" else (second, first)
        assert pair == PreferencePair("P", chosen, rejected)


def test_length_pair_score_gap():
    long, short = words(60), words(10)
    assert length_pair("P", long, short, LengthRule(), 8.0, 7.0) == PreferencePair("P", long, short)
    assert length_pair("P", long, short, LengthRule(), 8.0, 6.5) is None
    assert length_pair("P", long, short, LengthRule(max_score_gap=2.0), 8.0, 6.5) is not None


def test_pairwise_length_pairs_ignore_label():
    rows = [
        # The shorter response is the labelled favorite; by length the longer one is chosen.
        {"prompt": "Q1", "chosen": words(10), "rejected": words(40), "score_chosen": 8.0, "score_rejected": 7.5},
        {"prompt": "Q2", "chosen": words(40), "rejected": words(10), "score_chosen": 9.0, "score_rejected": 3.0},
        {"prompt": "Q3", "chosen": words(40), "rejected": words(35), "score_chosen": 5.0, "score_rejected": 5.0},
    ]
    assert pairwise_length_pairs(rows) == [PreferencePair("Q1", words(40), words(10))]


def test_verbosity_objective_by_layout(tmp_path):
    helpsteer = write_jsonl(tmp_path / "helpsteer.jsonl", HELPSTEER_ROWS)
    assert load_pairs(helpsteer, objective="verbosity") == helpsteer_rating_pairs(HELPSTEER_ROWS, "verbosity")

    rows = [{"prompt": "Q", "chosen": words(40), "rejected": words(10)}]
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert load_pairs(pairs_file, objective="verbosity") == [PreferencePair("Q", words(40), words(10))]


def test_length_rule_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="min_ratio=0.5"):
        LengthRule(min_ratio=0.5)
    with pytest.raises(ValueError, match="max_score_gap=-1"):
        LengthRule(max_score_gap=-1)


# Anything datasets can read


def test_hf_format_reads_local_json_and_parquet(tmp_path, no_network):
    pytest.importorskip("datasets", reason="the datasets route needs `pip install datasets`")
    cache = tmp_path / "cache"
    json_file = write_jsonl(tmp_path / "pairs.json", CONVERSATIONAL_ROWS)
    parquet_file = write_parquet(tmp_path / "pairs.parquet", TEXT_ROWS)

    assert load_pairs(json_file, format="hf", cache_dir=cache) == TEXT_PAIRS
    assert load_pairs(json_file, cache_dir=cache) == TEXT_PAIRS  # "auto" sends .json through datasets
    assert load_pairs(parquet_file, format="hf", cache_dir=cache) == TEXT_PAIRS
    assert load_pairs(parquet_file, format="hf", split="train[1:]", cache_dir=cache) == TEXT_PAIRS[1:]


def test_hf_format_reads_helpsteer_rows(tmp_path, no_network):
    pytest.importorskip("datasets", reason="the datasets route needs `pip install datasets`")
    path = write_jsonl(tmp_path / "helpsteer.jsonl", HELPSTEER_ROWS)
    pairs = load_pairs(path, format="hf", objective="helpfulness", cache_dir=tmp_path / "cache")
    assert pairs == helpsteer_rating_pairs(HELPSTEER_ROWS, "helpfulness")


def test_missing_datasets_names_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match=r"pip install datasets"):
        load_pairs(tmp_path / "pairs.json", format="hf")


# Bad input


def test_missing_column_error(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a"}])
    with pytest.raises(ValueError, match=r"pairs\.jsonl: cannot recognize the layout from columns \['chosen', 'prompt'\]"):
        load_pairs(path)
    with pytest.raises(ValueError, match=r"pairs\.jsonl: row 0 has no column 'rejected'"):
        load_pairs(path, format="ultrafeedback")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl contains no rows"):
        load_pairs(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"absent\.jsonl not found"):
        load_pairs(tmp_path / "absent.jsonl")


def test_invalid_json_line_names_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(TEXT_ROWS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2 is not valid JSON"):
        load_pairs(path)


def test_unknown_format_and_objective(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", TEXT_ROWS)
    with pytest.raises(ValueError, match=r"unknown format 'csv'.*'jsonl'"):
        load_pairs(path, format="csv")
    with pytest.raises(ValueError, match=r"unknown objective 'humor'"):
        load_pairs(path, objective="humor")
    with pytest.raises(ValueError, match=r"unknown objective 'correctness' for preference-pair rows"):
        load_pairs(path, objective="correctness")


def test_split_rejected_for_single_file(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", TEXT_ROWS)
    with pytest.raises(ValueError, match=r"split='test'.*format='hf'"):
        load_pairs(path, split="test")


def test_ambiguous_conversation_is_rejected(tmp_path):
    row = {"chosen": [user("Q1"), assistant("a")], "rejected": [user("Q2"), assistant("b")]}
    with pytest.raises(ValueError, match=r"row 0: chosen and rejected differ before their final message"):
        load_pairs(write_jsonl(tmp_path / "pairs.jsonl", [row]))


def test_multi_turn_completion_is_rejected(tmp_path):
    row = {"prompt": "Q", "chosen": [assistant("a"), user("more?"), assistant("b")], "rejected": "c"}
    with pytest.raises(ValueError, match=r"row 0, chosen: after the prompt turns the completion has roles"):
        load_pairs(write_jsonl(tmp_path / "pairs.jsonl", [row]))


def test_no_pairs_left_is_an_error(tmp_path):
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": 1.0, "score_rejected": 1.0}]
    with pytest.raises(ValueError, match=r"gave no helpfulness pairs from 1 rows"):
        load_pairs(write_jsonl(tmp_path / "pairs.jsonl", rows))


# Splits

SPLIT_PAIRS = [PreferencePair(f"prompt {i % 10}", f"good {i}", f"bad {i}") for i in range(40)]


def test_split_by_prompt_separates_prompts():
    split = split_by_prompt(SPLIT_PAIRS, eval_size=0.2, seed=0)
    train_prompts = {pair.prompt for pair in split.train}
    eval_prompts = {pair.prompt for pair in split.eval}
    assert not train_prompts & eval_prompts
    assert len(eval_prompts) == 2
    assert len(split.train) + len(split.eval) == len(SPLIT_PAIRS)
    assert set(split.eval_prompts) == eval_prompts
    assert len(split.eval_prompts) == 2


def test_split_by_prompt_is_deterministic():
    first = split_by_prompt(SPLIT_PAIRS, eval_size=0.3, seed=7)
    again = split_by_prompt(SPLIT_PAIRS, eval_size=0.3, seed=7)
    assert first == again
    others = [split_by_prompt(SPLIT_PAIRS, eval_size=0.3, seed=seed).eval_prompts for seed in range(8)]
    assert len({tuple(prompts) for prompts in others}) > 1


def test_split_by_prompt_keeps_input_order():
    split = split_by_prompt(SPLIT_PAIRS, eval_size=3, seed=1)
    assert split.train == [pair for pair in SPLIT_PAIRS if pair.prompt not in split.eval_prompts]
    assert split.eval == [pair for pair in SPLIT_PAIRS if pair.prompt in split.eval_prompts]
    assert len(split.eval_prompts) == 3


def test_split_handles_message_prompts():
    history = (user("Hi."), assistant("Hello."), user("Capital?"))
    pairs = [PreferencePair(history, "Paris.", "Lyon."), PreferencePair("Other", "a", "b")]
    split = split_by_prompt(pairs, eval_size=1, seed=0)
    assert len(split.eval_prompts) == 1
    assert len(split.train) == 1


@pytest.mark.parametrize(("eval_size", "message"), [(1.0, r"must be in \[0, 1\)"), (10, "at least one prompt"), ("a", "fraction")])
def test_split_rejects_bad_eval_size(eval_size, message):
    with pytest.raises(ValueError, match=message):
        split_by_prompt(SPLIT_PAIRS, eval_size=eval_size)


def test_load_pair_split_from_config(tmp_path):
    rows = [{"prompt": f"Q{i % 5}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(20)]
    config = DataConfig(source=str(write_jsonl(tmp_path / "pairs.jsonl", rows)), eval_size=0.2, seed=3)
    split = load_pair_split(config)
    assert len(split.eval_prompts) == 1
    assert len(split.eval) == 4
    assert len(split.train) == 16
    assert split == load_pair_split(config)


def test_data_config_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        DataConfig(source="x", format="xml")
