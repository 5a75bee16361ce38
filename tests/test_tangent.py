"""The linearized model against finite differences, the base model and its no-cache form."""

import pytest
import torch
from conftest import tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM

from tsdpo.tangent import (
    AttentionImplementationError,
    LinearizedCache,
    linearized_logits,
    linearized_step,
    select_parameters,
)


def random_delta(params, scale=1e-2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale for name, p in params.items()}


def inputs(batch=2, seq=6, vocab=300, seed=2):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=generator)
    return ids, torch.ones_like(ids)


def central_difference(model, params, delta, ids, eps):
    """(f(θ0 + εΔ) - f(θ0 - εΔ)) / 2ε, the reference for J·Δ."""
    with torch.no_grad():
        plus = torch.func.functional_call(model, {n: p + eps * delta[n] for n, p in params.items()}, (ids,)).logits
        minus = torch.func.functional_call(model, {n: p - eps * delta[n] for n, p in params.items()}, (ids,)).logits
    return (plus - minus) / (2 * eps)


def test_jvp_matches_central_finite_differences(model):
    model = model.double()
    params = select_parameters(model)
    delta = random_delta(params)
    ids, mask = inputs()

    _, tangent = linearized_logits(model, params, delta, ids, mask)

    if model.config.model_type == "llama":
        # transformers' Llama computes RMSNorm and the attention softmax in float32 even for
        # a float64 model, so rounding limits the difference quotient: ε = 3e-3 balances
        # rounding against the O(ε²) truncation error, which leaves about 1e-5.
        eps, atol = 3e-3, 3e-5
    else:
        eps, atol = 1e-6, 1e-8
    finite_difference = central_difference(model, params, delta, ids, eps)
    torch.testing.assert_close(tangent, finite_difference, rtol=0, atol=atol)
    assert tangent.abs().max() > 1e-2  # the check above compares something non-trivial


def test_linearized_logits_equal_base_at_zero(model):
    params = select_parameters(model)
    zero = {name: torch.zeros_like(p) for name, p in params.items()}
    ids, mask = inputs()

    primal, tangent = linearized_logits(model, params, zero, ids, mask)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(primal + tangent, base)


def test_cached_decoding_equals_no_cache_forward(model):
    params = select_parameters(model)
    delta = random_delta(params, scale=5e-2)
    ids, mask = inputs(seq=9)
    positions = torch.arange(ids.shape[1]).expand_as(ids)

    primal, tangent = linearized_logits(model, params, delta, ids, mask)
    full = primal + tangent

    pieces = []
    logits, cache = linearized_step(model, params, delta, ids[:, :5], mask[:, :5], positions[:, :5], None)
    pieces.append(logits)
    for t in range(5, ids.shape[1]):
        logits, cache = linearized_step(
            model, params, delta, ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], cache
        )
        pieces.append(logits)
    incremental = torch.cat(pieces, dim=1)

    torch.testing.assert_close(incremental, full, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, LinearizedCache)
    assert cache.layers[0][0].shape[-2] == ids.shape[1]  # keys of every position are cached
    assert cache.layers[0][1].abs().max() > 0  # and so are their tangents


def test_parameter_subset_leaves_others_fixed():
    model = tiny_llama().double()
    params = select_parameters(model, [r"layers\.1\."])
    assert params and all(".layers.1." in name for name in params)
    delta = random_delta(params)
    ids, mask = inputs()

    _, tangent = linearized_logits(model, params, delta, ids, mask)
    finite_difference = central_difference(model, params, delta, ids, eps=3e-3)  # float32 inside Llama, as above
    torch.testing.assert_close(tangent, finite_difference, rtol=0, atol=3e-5)


def test_select_parameters_rejects_unmatched_pattern():
    with pytest.raises(ValueError, match="no parameter name matches"):
        select_parameters(tiny_llama(), ["no_such_layer"])


def test_fused_attention_fails_early():
    config = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).eval()
    params = select_parameters(model)
    ids, mask = inputs()
    with pytest.raises(AttentionImplementationError, match="attn_implementation='eager'"):
        linearized_logits(model, params, random_delta(params), ids, mask)


@pytest.mark.parametrize("tied", [False, True])
def test_explicit_llama_path_matches_jvp(tied):
    """Llama's explicit tangents agree with torch.func.jvp: values and gradients with respect to Δ."""
    model = tiny_llama(tie_word_embeddings=tied).double()
    params = select_parameters(model)
    delta = {n: t.requires_grad_(True) for n, t in random_delta(params, scale=5e-2).items()}
    # No padding here: transformers' float64 Llama turns fully masked rows into NaN.
    ids, mask = inputs()

    reference_primal, reference_tangent = linearized_logits(model, params, delta, ids, mask, explicit=False)
    primal, tangent = linearized_logits(model, params, delta, ids, mask, explicit=True)
    torch.testing.assert_close(primal, reference_primal, rtol=0, atol=1e-10)
    # Llama's norm and softmax run in float32 inside transformers, so tangents agree to float32 precision.
    torch.testing.assert_close(tangent, reference_tangent, rtol=0, atol=1e-6)
    assert reference_tangent.abs().max() > 0.1

    # The gradient of a loss of the linearized logits, at Δ ≠ 0, through both paths.
    weights = torch.randn_like(tangent)
    reference_grads = torch.autograd.grad(((reference_primal.detach() + reference_tangent).tanh() * weights).sum(),
                                          list(delta.values()))
    grads = torch.autograd.grad(((primal.detach() + tangent).tanh() * weights).sum(), list(delta.values()))
    for name, reference, grad in zip(delta, reference_grads, grads):
        torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6, msg=f"gradient of {name}")


def test_llama_dual_tensor_and_explicit_decoding_agree():
    model = tiny_llama()
    params = select_parameters(model)
    delta = random_delta(params, scale=5e-2)
    ids, mask = inputs(seq=8)
    mask[0, :2] = 0  # left padding, as batched generation uses
    positions = torch.arange(ids.shape[1]).expand_as(ids)

    results = {}
    for explicit in (False, True):
        logits, cache = linearized_step(model, params, delta, ids[:, :5], mask[:, :5], positions[:, :5], None,
                                        explicit=explicit)
        pieces = [logits]
        for t in range(5, ids.shape[1]):
            logits, cache = linearized_step(model, params, delta, ids[:, t : t + 1], mask[:, : t + 1],
                                            positions[:, t : t + 1], cache, explicit=explicit)
            pieces.append(logits)
        results[explicit] = torch.cat(pieces, dim=1)
    primal, tangent = linearized_logits(model, params, delta, ids, mask, explicit=False)
    real = mask.bool()  # logits at padding positions are never read
    torch.testing.assert_close(results[False][real], (primal + tangent)[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[True][real], results[False][real], rtol=1e-5, atol=1e-5)
