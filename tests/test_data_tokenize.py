"""Tokenization of pairs on tokenizers shaped like Llama 3, Qwen2, SmolLM2 and GPT-2.

Each test checks one case that commonly breaks DPO data pipelines: a doubled
or missing end of turn, a doubled BOS, a completion truncated to nothing, and
a pad id equal to the EOS id.
"""

import logging
import math

import pytest
import torch
from conftest import build_tokenizer, tiny_gpt2, tiny_llama
from tokenizer_zoo import TOKENIZERS, gpt2_tokenizer, llama3_tokenizer, qwen2_tokenizer, smollm2_tokenizer
from tokenizers import processors

from tsdpo.data.pairs import PreferencePair
from tsdpo.data.tokenize import (
    collate_pairs,
    encode_completion,
    encode_prompt,
    end_of_turn_id,
    tokenize_pair,
    tokenize_pairs,
)
from tsdpo.dpo import dpo_loss, sequence_logps, split_chosen_rejected

PROMPT = "What is two plus three?"
ANSWER = "Two plus three is five."
PAIRS = [
    PreferencePair(PROMPT, ANSWER, "I am not sure."),
    PreferencePair("Name the capital of France.", "Paris.", "Thanks for asking! I am happy to help you with that question today."),
    PreferencePair("How many letters are in cat?", "Three.", "There are three letters in cat."),
]

END_OF_TURN = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "smollm2": "<|im_end|>", "gpt2": "<|endoftext|>"}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def zoo_tokenizer(request):
    return TOKENIZERS[request.param]()


def plain_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token_id(tokenizer, token):
    return tokenizer.convert_tokens_to_ids(token)


# End of turn


@pytest.mark.parametrize("family", sorted(TOKENIZERS))
def test_end_of_turn_id_by_family(family):
    tokenizer = TOKENIZERS[family]()
    assert end_of_turn_id(tokenizer) == token_id(tokenizer, END_OF_TURN[family])


def test_end_of_turn_of_project_tokenizer():
    tokenizer = build_tokenizer()
    assert end_of_turn_id(tokenizer) == token_id(tokenizer, "<|end|>")


def test_end_of_turn_differs_from_eos():
    for tokenizer in (llama3_tokenizer(), qwen2_tokenizer()):
        assert end_of_turn_id(tokenizer) != tokenizer.eos_token_id


def test_end_of_turn_without_template():
    tokenizer = llama3_tokenizer()
    tokenizer.chat_template = None
    assert end_of_turn_id(tokenizer) == token_id(tokenizer, "<|end_of_text|>")


@pytest.mark.parametrize(
    "completion",
    [ANSWER, ANSWER + "<|im_end|>\n", ANSWER + "<|eot_id|>", ANSWER + "<|endoftext|>", ANSWER + " <|end_of_text|>"],
)
def test_completion_has_one_end_of_turn(zoo_tokenizer, completion):
    eot = end_of_turn_id(zoo_tokenizer)
    ids = encode_completion(zoo_tokenizer, completion)
    written_end = completion[len(ANSWER):].strip()
    if written_end in (zoo_tokenizer.convert_ids_to_tokens(eot), zoo_tokenizer.eos_token):
        # The completion already ends with this tokenizer's end-of-turn or EOS text: it is replaced.
        assert ids == plain_ids(zoo_tokenizer, ANSWER) + [eot]
    assert ids[-1] == eot
    assert ids.count(eot) == 1
    assert zoo_tokenizer.eos_token_id == eot or zoo_tokenizer.eos_token_id not in ids


def test_chatml_completion_exact_ids():
    tokenizer = qwen2_tokenizer()
    im_end = token_id(tokenizer, "<|im_end|>")
    assert encode_completion(tokenizer, "Paris.<|im_end|>\n") == plain_ids(tokenizer, "Paris.") + [im_end]
    assert encode_completion(tokenizer, "Paris.") == plain_ids(tokenizer, "Paris.") + [im_end]


def test_pair_matches_chat_template_rendering(zoo_tokenizer):
    if not zoo_tokenizer.chat_template:
        pytest.skip("GPT-2 style tokenizers have no chat template to compare with")
    pair = tokenize_pair(zoo_tokenizer, PAIRS[0], max_length=256, max_prompt_length=128)
    conversation = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}]
    rendered = zoo_tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"]

    # The template's ids up to and including the end of the assistant turn.
    eot = end_of_turn_id(zoo_tokenizer)
    end = rendered.index(eot, len(pair.prompt_ids)) + 1
    assert list(pair.prompt_ids + pair.chosen_ids) == rendered[:end]


# BOS


def test_llama3_template_bos_not_doubled():
    tokenizer = llama3_tokenizer()
    bos = tokenizer.bos_token_id
    # The trap: the rendered text already starts with BOS, and the tokenizer adds another.
    naive = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False))["input_ids"]
    assert naive[:2] == [bos, bos]

    pair = tokenize_pair(tokenizer, PAIRS[0], max_length=256, max_prompt_length=128)
    for sequence in (pair.prompt_ids + pair.chosen_ids, pair.prompt_ids + pair.rejected_ids):
        assert sequence[0] == bos
        assert sequence.count(bos) == 1


def test_llama3_bos_once_without_template():
    tokenizer = llama3_tokenizer()
    tokenizer.chat_template = None
    bos = tokenizer.bos_token_id
    expected = [bos] + plain_ids(tokenizer, PROMPT)
    assert encode_prompt(tokenizer, PROMPT) == expected
    assert encode_prompt(tokenizer, "<|begin_of_text|>" + PROMPT) == expected


def test_bos_text_in_message_stays_text():
    tokenizer = llama3_tokenizer()
    ids = encode_prompt(tokenizer, "<|begin_of_text|>" + PROMPT)
    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids[0] == tokenizer.bos_token_id


def test_prompt_drops_appended_eos():
    tokenizer = llama3_tokenizer()
    tokenizer.chat_template = None
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A <|end_of_text|>",
        special_tokens=[("<|begin_of_text|>", bos), ("<|end_of_text|>", eos)],
    )
    assert tokenizer(PROMPT)["input_ids"][-1] == eos  # the tokenizer does append EOS to plain text
    assert encode_prompt(tokenizer, PROMPT) == [bos] + plain_ids(tokenizer, PROMPT)


def test_smollm2_prompt_equals_template_ids():
    # bos_token is <|im_start|>, which opens every ChatML turn: it recurs by design and is never added.
    tokenizer = smollm2_tokenizer()
    expected = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ids = encode_prompt(tokenizer, PROMPT)
    assert ids == expected["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 3  # system, user and the assistant header


def test_gpt2_prompt_is_plain_text():
    tokenizer = gpt2_tokenizer()
    assert encode_prompt(tokenizer, PROMPT) == plain_ids(tokenizer, PROMPT)


def test_gpt2_empty_prompt_is_bos():
    tokenizer = gpt2_tokenizer()
    assert encode_prompt(tokenizer, "") == [token_id(tokenizer, "<|endoftext|>")]


def test_gpt2_bos_text_becomes_one_token():
    tokenizer = gpt2_tokenizer()
    expected = [token_id(tokenizer, "<|endoftext|>")] + plain_ids(tokenizer, PROMPT)
    assert encode_prompt(tokenizer, "<|endoftext|>" + PROMPT) == expected


def test_control_token_text_stays_text():
    tokenizer = qwen2_tokenizer()
    im_end, im_start = token_id(tokenizer, "<|im_end|>"), token_id(tokenizer, "<|im_start|>")
    ids = encode_prompt(tokenizer, "Hi<|im_end|>\n<|im_start|>assistant\nSure")
    clean = encode_prompt(tokenizer, "Hi")
    assert ids.count(im_end) == clean.count(im_end)
    assert ids.count(im_start) == clean.count(im_start)
    assert encode_completion(tokenizer, "a <|im_start|> b").count(im_start) == 0


def test_message_list_prompt_uses_every_turn():
    tokenizer = qwen2_tokenizer()
    messages = (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": PROMPT},
    )
    expected = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)["input_ids"]
    assert encode_prompt(tokenizer, messages) == expected


# Truncation


def test_long_prompt_keeps_bos_and_end():
    tokenizer = llama3_tokenizer()
    pair = PreferencePair("Thanks for asking! " * 20 + PROMPT, ANSWER, "I am not sure.")
    full_prompt = encode_prompt(tokenizer, pair.prompt)

    tokenized = tokenize_pair(tokenizer, pair, max_length=24, max_prompt_length=16)
    assert tokenized.prompt_ids == (tokenizer.bos_token_id, *full_prompt[-15:])
    assert tokenized.chosen_ids == tuple(encode_completion(tokenizer, ANSWER)[:8])
    assert end_of_turn_id(tokenizer) not in tokenized.chosen_ids  # a cut response has not ended


def test_truncation_keeps_scored_tokens():
    tokenizer = llama3_tokenizer()
    long_prompt = "How many letters are in cat? " * 30
    pairs = [PreferencePair(long_prompt, ANSWER, "Six."), PreferencePair(PROMPT, ANSWER, "I am not sure.")]
    tokenized = tokenize_pairs(tokenizer, pairs, max_length=20, max_prompt_length=19)
    assert len(tokenized) == 2
    assert len(tokenized[0].chosen_ids) == 1

    batch = collate_pairs(tokenized, tokenizer.eos_token_id)
    assert (batch["completion_mask"][:, 1:].sum(-1) >= 1).all()
    loss = dpo_loss_of(batch, tiny_llama(vocab_size=len(tokenizer)), tiny_llama(vocab_size=len(tokenizer), seed=1))
    assert math.isfinite(loss)


def test_unscorable_pair_dropped_with_warning(caplog):
    # No chat template and no BOS: an empty prompt leaves nothing to predict the first completion token from.
    tokenizer = qwen2_tokenizer()
    tokenizer.chat_template = None
    pairs = [PreferencePair("", "", "Five."), *PAIRS[:2], PreferencePair("", "Two", "")]
    with caplog.at_level(logging.WARNING, logger="tsdpo.data.tokenize"):
        tokenized = tokenize_pairs(tokenizer, pairs, max_length=64, max_prompt_length=32)
    assert len(tokenized) == 2
    assert "dropped 2 of 4 pairs" in caplog.text

    batch = collate_pairs(tokenized, tokenizer.pad_token_id)
    assert (batch["completion_mask"][:, 1:].sum(-1) >= 1).all()
    loss = dpo_loss_of(batch, tiny_llama(vocab_size=len(tokenizer)), tiny_llama(vocab_size=len(tokenizer), seed=1))
    assert math.isfinite(loss)


def test_empty_prompt_uses_bos():
    tokenizer = gpt2_tokenizer()
    pair = tokenize_pair(tokenizer, PreferencePair("", "", "Five."), max_length=16, max_prompt_length=8)
    assert pair.prompt_ids == (tokenizer.bos_token_id,)
    assert pair.chosen_ids == (tokenizer.eos_token_id,)


@pytest.mark.parametrize(("max_length", "max_prompt_length"), [(16, 16), (16, 20), (16, 0)])
def test_tokenize_pairs_rejects_prompt_budget(max_length, max_prompt_length):
    with pytest.raises(ValueError, match=f"max_prompt_length={max_prompt_length} must be at least 1 and below"):
        tokenize_pairs(gpt2_tokenizer(), PAIRS, max_length=max_length, max_prompt_length=max_prompt_length)


# Pad equal to EOS


def dpo_loss_of(batch, policy, reference):
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        policy_logps = sequence_logps(policy(**inputs).logits, batch["input_ids"], batch["completion_mask"])
        reference_logps = sequence_logps(reference(**inputs).logits, batch["input_ids"], batch["completion_mask"])
    loss, _ = dpo_loss(*split_chosen_rejected(policy_logps), *split_chosen_rejected(reference_logps), beta=0.1)
    return loss.item()


def unbatched_logps(model, sequence, prompt_length):
    ids = torch.tensor([sequence])
    mask = torch.zeros_like(ids)
    mask[0, prompt_length:] = 1
    with torch.no_grad():
        return sequence_logps(model(input_ids=ids).logits, ids, mask).item()


@pytest.mark.parametrize("family", ["gpt2", "smollm2", "qwen2"])
@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_pad_eos_batched_matches_unbatched(family, architecture):
    tokenizer = TOKENIZERS[family]()
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    model = tiny_llama(vocab_size=len(tokenizer)) if architecture == "llama" else tiny_gpt2(vocab_size=len(tokenizer))
    tokenized = tokenize_pairs(tokenizer, PAIRS, max_length=96, max_prompt_length=64)
    batch = collate_pairs(tokenized, tokenizer.pad_token_id)
    assert (batch["input_ids"] == tokenizer.pad_token_id).any()  # padding really uses the EOS id

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    batched = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])

    completions = [p.chosen_ids for p in tokenized] + [p.rejected_ids for p in tokenized]
    prompts = [p.prompt_ids for p in tokenized] * 2
    expected = [unbatched_logps(model, list(p + c), len(p)) for p, c in zip(prompts, completions)]
    torch.testing.assert_close(batched, torch.tensor(expected), rtol=0, atol=1e-5)


def test_pad_eos_scores_final_eos():
    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    tokenized = tokenize_pairs(tokenizer, PAIRS, max_length=96, max_prompt_length=64)
    batch = collate_pairs(tokenized, tokenizer.pad_token_id)

    lengths = batch["attention_mask"].sum(-1)
    for row, length in enumerate(lengths.tolist()):
        assert batch["input_ids"][row, length - 1] == eos
        assert batch["completion_mask"][row, length - 1] == 1
        assert batch["completion_mask"][row, length:].sum() == 0

    # The EOS term changes the sum: scoring without the last token gives a different value.
    model = tiny_gpt2(vocab_size=len(tokenizer))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with_eos = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
    without_eos = batch["completion_mask"].clone()
    without_eos[torch.arange(len(lengths)), lengths - 1] = 0
    assert (with_eos < sequence_logps(logits, batch["input_ids"], without_eos)).all()
