"""Composition and decoding against the base model, exact merges and sequential runs."""

import threading

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama

from tsdpo.compose import SteerableModel
from tsdpo.data.tokenize import encode_prompt
from tsdpo.generation import DecodingConfig, decode_tokens, generate_batch, stream_text
from tsdpo.tangent import linearized_logits, select_parameters
from tsdpo.vectors import TangentVector

PROMPTS = ["What is two plus three?", "Name the capital of France.", "How many letters are in cat?"]


def make_steerable(model, scale=0.05):
    params = select_parameters(model)
    vectors = {}
    for seed, objective in enumerate(["helpfulness", "verbosity"]):
        generator = torch.Generator().manual_seed(seed + 10)
        vectors[objective] = TangentVector(
            {n: torch.randn(p.shape, generator=generator) * scale for n, p in params.items()}
        )
    return SteerableModel(model, vectors)


def hf_greedy(model, tokenizer, prompt, max_new_tokens):
    ids = torch.tensor([encode_prompt(tokenizer, prompt)])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("mode", ["tangent", "merged"])
def test_zero_weights_reproduce_base_generation(model, tokenizer, mode):
    steerable = make_steerable(model)
    config = DecodingConfig(max_new_tokens=12)
    for prompt in PROMPTS:
        tokens = [
            int(t[0])
            for t in decode_tokens(
                steerable, [encode_prompt(tokenizer, prompt)], {"helpfulness": 0, "verbosity": 0}, mode, config,
                tokenizer.eos_token_id, tokenizer.pad_token_id,
            )
        ]
        assert tokens == hf_greedy(model, tokenizer, prompt, 12)


def test_zero_weights_give_base_logits_exactly(model, tokenizer):
    steerable = make_steerable(model)
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0])])
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
    for mode in ("tangent", "merged"):
        logits = steerable.decoder({"helpfulness": 0.0, "verbosity": 0.0}, mode).forward(ids, mask, positions)
        assert torch.equal(logits, base), mode


def test_tangent_decoding_matches_linearized_forward(model, tokenizer):
    """The first decoded logits equal f(θ0) + J·(Σ α_k Δ_k) from the JVP."""
    steerable = make_steerable(model)
    weights = {"helpfulness": 1.5, "verbosity": -0.5}
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[1])])
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    decoded = steerable.decoder(weights, "tangent").forward(ids, mask, positions)

    params = select_parameters(model)
    delta = {
        n: 1.5 * steerable.vectors["helpfulness"].tensors[n] - 0.5 * steerable.vectors["verbosity"].tensors[n]
        for n in params
    }
    primal, tangent = linearized_logits(model, params, delta, ids, mask)
    torch.testing.assert_close(decoded, primal + tangent, rtol=1e-5, atol=1e-5)


def test_merged_mode_equals_model_with_merged_weights(tokenizer):
    model = tiny_llama()
    steerable = make_steerable(model)
    weights = {"helpfulness": 2.0, "verbosity": -1.0}
    merged_copy = tiny_llama()
    with torch.no_grad():
        for name, p in merged_copy.named_parameters():
            p += 2.0 * steerable.vectors["helpfulness"].tensors[name] - steerable.vectors["verbosity"].tensors[name]
    tokens = [
        int(t[0])
        for t in decode_tokens(
            steerable, [encode_prompt(tokenizer, PROMPTS[2])], weights, "merged", DecodingConfig(max_new_tokens=10),
            tokenizer.eos_token_id, tokenizer.pad_token_id,
        )
    ]
    assert tokens == hf_greedy(merged_copy, tokenizer, PROMPTS[2], 10)


def test_batched_decoding_matches_single_rows(tokenizer):
    steerable = make_steerable(tiny_llama())
    weights = {"helpfulness": 1.0, "verbosity": 0.5}
    config = DecodingConfig(max_new_tokens=8)
    batched = generate_batch(steerable, tokenizer, PROMPTS, weights, "tangent", config)
    single = [generate_batch(steerable, tokenizer, [p], weights, "tangent", config)[0] for p in PROMPTS]
    assert batched == single


def test_requests_never_modify_shared_model(tokenizer):
    model = tiny_llama()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    steerable = make_steerable(model)
    for mode in ("tangent", "merged"):
        list(stream_text(steerable, tokenizer, PROMPTS[0], {"helpfulness": 2.0, "verbosity": -1.0}, mode))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_concurrent_requests_get_their_own_outputs(tokenizer):
    steerable = make_steerable(tiny_gpt2(), scale=0.2)
    config = DecodingConfig(max_new_tokens=16)
    requests = [({"helpfulness": 2.0, "verbosity": 0.0}, "tangent"), ({"helpfulness": -1.0, "verbosity": 2.0}, "merged"),
                ({"helpfulness": 0.0, "verbosity": -1.0}, "tangent")]
    sequential = [list(stream_text(steerable, tokenizer, PROMPTS[0], w, m, config)) for w, m in requests]
    assert len({s[-1] if s else "" for s in sequential}) > 1  # the weights really change the output

    results = [None] * len(requests)

    def run(i):
        results[i] = list(stream_text(steerable, tokenizer, PROMPTS[0], *requests[i], config))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == sequential


def test_stop_event_ends_decoding():
    steerable = make_steerable(tiny_llama())
    stop = threading.Event()
    config = DecodingConfig(max_new_tokens=100_000)
    produced = 0
    for _ in decode_tokens(steerable, [[5, 6, 7]], {"helpfulness": 1.0}, "tangent", config, 10_000, 0, stop):
        produced += 1
        if produced == 3:
            stop.set()
    assert produced == 3  # the loop ended right after the stop, long before max_new_tokens


def test_sampling_is_seeded_and_top_p_restricts(tokenizer):
    steerable = make_steerable(tiny_llama())
    weights = {"helpfulness": 0.5, "verbosity": 0.5}
    config = DecodingConfig(max_new_tokens=10, do_sample=True, temperature=1.5, seed=7)
    first = generate_batch(steerable, tokenizer, PROMPTS, weights, "tangent", config)
    assert first == generate_batch(steerable, tokenizer, PROMPTS, weights, "tangent", config)
    nucleus = DecodingConfig(max_new_tokens=10, do_sample=True, top_p=1e-6, seed=3)
    greedy = DecodingConfig(max_new_tokens=10)
    assert generate_batch(steerable, tokenizer, PROMPTS, weights, "tangent", nucleus) == generate_batch(
        steerable, tokenizer, PROMPTS, weights, "tangent", greedy
    )


@pytest.mark.parametrize(
    "weights, message",
    [({"helpfulness": 2.5}, r"outside the supported range \[-1.0, 2.0\]"), ({"kindness": 1.0}, "unknown objective"),
     ({"helpfulness": float("nan")}, "helpfulness=nan is not a finite number")],
)
def test_bad_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        make_steerable(tiny_llama()).decoder(weights, "tangent")


def test_bad_decoding_settings_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        DecodingConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        DecodingConfig(temperature=0)


def test_empty_prompt_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="prompt is empty"):
        list(stream_text(make_steerable(tiny_llama()), tokenizer, "   ", {}))


class FixedLogitsSteerable:
    """A stand-in model whose every next-token distribution peaks at one token."""

    def __init__(self, token: int, vocab: int) -> None:
        self.token, self.vocab = token, vocab

    def decoder(self, weights, mode):
        steerable = self

        class Decoder:
            def forward(self, input_ids, attention_mask, position_ids):
                logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], steerable.vocab)
                logits[..., steerable.token] = 1.0
                return logits

        return Decoder()


def test_generation_stops_at_end_of_turn_token():
    """Llama 3 ends an assistant turn with <|eot_id|>, which is not its eos_token."""
    from tokenizer_zoo import llama3_tokenizer

    from tsdpo.generation import stop_token_ids

    tokenizer = llama3_tokenizer()
    end_of_turn = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert end_of_turn != tokenizer.eos_token_id
    assert stop_token_ids(tokenizer) == [tokenizer.eos_token_id, end_of_turn]

    steerable = FixedLogitsSteerable(end_of_turn, len(tokenizer))
    assert list(stream_text(steerable, tokenizer, "Hi", {}, "tangent", DecodingConfig(max_new_tokens=5))) == []
    assert generate_batch(steerable, tokenizer, ["Hi", "Hello there"], {}, "tangent", DecodingConfig(max_new_tokens=5)) == ["", ""]


def test_decoding_stops_at_the_context_length():
    """The tiny Llama has a 128-token context: long prompts are rejected, decoding stops at the end."""
    steerable = make_steerable(tiny_llama())
    config = DecodingConfig(max_new_tokens=200)
    with pytest.raises(ValueError, match="the prompt has 128 tokens but the model's context is 128 tokens"):
        list(decode_tokens(steerable, [[5] * 128], {}, "tangent", config, 10_000, 0))
    steps = list(decode_tokens(steerable, [[5] * 120], {}, "merged", config, 10_000, 0))
    assert len(steps) == 8
