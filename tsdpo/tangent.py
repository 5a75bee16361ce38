"""The linearized model f_lin(x; θ0 + Δ) = f(x; θ0) + J(x; θ0)·Δ.

Training uses one `torch.func.jvp` per batch: its primal output is the base
model's logits (the DPO reference) and its tangent output is J·Δ. Decoding keeps
a KV cache of primal and tangent keys and values, so each new token costs one
incremental forward. For Llama models that forward propagates the tangents
explicitly; for other models it uses forward-mode dual tensors from
`torch.autograd.forward_ad`.

The linearization follows "Task Arithmetic in the Tangent Space: Improved
Editing of Pre-Trained Models" (Ortiz-Jimenez, Favero and Frossard, 2023).
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp
from transformers import DynamicCache

Params = dict[str, Tensor]

# `functional_call` and `swapped_parameters` swap parameters on the shared module
# for the duration of a call, and PyTorch's forward-mode AD has one process-wide
# dual level. So every
# forward that replaces parameters or enters a dual level holds this lock, which
# keeps concurrent requests from seeing each other's weights.
MODEL_CALL_LOCK = threading.RLock()


class AttentionImplementationError(ValueError):
    """A linearized path was asked to run on a model without eager attention."""


def require_eager_attention(model: nn.Module) -> None:
    """Raise unless `model` uses eager attention.

    PyTorch's fused scaled-dot-product attention and flash attention kernels
    have no forward-mode derivative, so a JVP through them fails deep inside
    the forward pass. Checking the configuration first gives a usable message.
    """
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation != "eager":
        raise AttentionImplementationError(
            f"the linearized model needs eager attention, but this model uses "
            f"attn_implementation={implementation!r}: fused attention kernels have no "
            f"forward-mode derivative. Load it with "
            f"AutoModelForCausalLM.from_pretrained(..., attn_implementation='eager')."
        )


def select_parameters(model: nn.Module, patterns: Iterable[str] | None = None) -> Params:
    """Return the parameters that carry a tangent, by name, detached from autograd.

    `patterns` are regular expressions matched with `re.search` against the
    parameter names of `model.named_parameters()`; None selects every
    parameter. Tied parameters (an input embedding shared with the output
    head) appear once, under their first name, so they carry one delta.
    """
    named = dict(model.named_parameters())  # deduplicates tied parameters
    if patterns is None:
        return {name: p.detach() for name, p in named.items()}

    compiled = [re.compile(p) for p in patterns]
    selected = {name: p.detach() for name, p in named.items() if any(c.search(name) for c in compiled)}
    if not selected:
        raise ValueError(
            f"no parameter name matches {list(patterns)!r}; the model's parameters "
            f"include {list(named)[:5]!r}. Pass a pattern such as r'layers\\.3\\.' or None."
        )
    return selected


# model -> {canonical parameter name: [(module, attribute), ...]}, one entry per alias of a tied parameter.
_PARAMETER_SLOTS: "weakref.WeakKeyDictionary[nn.Module, dict[str, list[tuple[nn.Module, str]]]]" = (
    weakref.WeakKeyDictionary()
)


def _parameter_slots(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    slots = _PARAMETER_SLOTS.get(model)
    if slots is None:
        canonical = {id(p): name for name, p in model.named_parameters()}
        slots = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            module_name, _, attribute = name.rpartition(".")
            slots.setdefault(canonical[id(p)], []).append((model.get_submodule(module_name), attribute))
        _PARAMETER_SLOTS[model] = slots
    return slots


@contextmanager
def swapped_parameters(model: nn.Module, tensors: Mapping[str, Tensor]) -> Iterator[None]:
    """Put `tensors` in place of the named parameters of `model` inside the block, then restore them.

    Names are those of `select_parameters`, and a tied parameter is replaced
    under every alias, as `functional_call` does. This costs a dictionary
    write per parameter, a small fraction of `functional_call`'s set-up,
    which matters once per decoded token. Callers must hold MODEL_CALL_LOCK.
    """
    slots = _parameter_slots(model)
    unknown = [name for name in tensors if name not in slots]
    if unknown:
        raise KeyError(f"{unknown[:5]!r} are not parameters of the model; pass names from select_parameters(model)")
    saved = []
    try:
        for name, tensor in tensors.items():
            for module, attribute in slots[name]:
                saved.append((module, attribute, module._parameters[attribute]))
                module._parameters[attribute] = tensor
        yield
    finally:
        for module, attribute, original in reversed(saved):
            module._parameters[attribute] = original


def linearized_logits(
    model: nn.Module,
    primals: Mapping[str, Tensor],
    tangents: Mapping[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    explicit: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (f(x; θ0), J(x; θ0)·Δ) from one forward pass that carries the tangent.

    `primals` contains θ0 for the parameters that carry a tangent and `tangents`
    contains Δ for the same names. Parameters not in `primals` keep the module's
    own values and get no tangent. Both outputs have shape (batch, seq, vocab).
    The tangent output is differentiable with respect to `tangents`, which is
    how TS-DPO trains Δ with ordinary autograd. `explicit=None` lets Llama
    models take the faster explicit tangent path below and other models a
    `torch.func.jvp`; `explicit=False` forces the JVP, the reference the tests
    compare the explicit path with.
    """
    require_eager_attention(model)
    names = list(primals)
    missing = [name for name in names if name not in tangents]
    if missing:
        raise KeyError(f"tangents lack the parameters {missing[:5]!r}")

    if explicit is None:
        explicit = supports_explicit_tangents(model)
    if explicit:
        return _explicit_linearized_logits(model, primals, tangents, input_ids, attention_mask)

    def logits_of(*values: Tensor) -> Tensor:
        params = dict(zip(names, values))
        output = functional_call(
            model, params, args=(), kwargs={"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        )
        return output.logits

    primal_values = tuple(primals[name] for name in names)
    # The tangent must share the primal's dtype; the cast stays differentiable.
    tangent_values = tuple(tangents[name].to(primals[name].dtype) for name in names)
    with MODEL_CALL_LOCK:
        return jvp(logits_of, primal_values, tangent_values)


class LinearizedCache:
    """A KV cache of the linearized model, stored as primal and tangent tensors.

    Dual tensors only live inside a forward-AD dual level, and the process has
    a single one, so the cache keeps the two parts apart between steps and
    joins them with `fwAD.make_dual` inside each step. Each entry has the
    model's cache shape, for Llama (batch, kv_heads, seq, head_dim).
    """

    def __init__(self) -> None:
        self.layers: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (key, key_tangent, value, value_tangent)

    def to_dual(self) -> DynamicCache | None:
        if not self.layers:
            return None
        cache = DynamicCache()
        for layer_idx, (key, key_tangent, value, value_tangent) in enumerate(self.layers):
            cache.update(fwAD.make_dual(key, key_tangent), fwAD.make_dual(value, value_tangent), layer_idx)
        return cache

    @classmethod
    def from_dual(cls, cache: DynamicCache) -> "LinearizedCache":
        result = cls()
        for layer in cache.layers:
            key, key_tangent = _split_dual(layer.keys)
            value, value_tangent = _split_dual(layer.values)
            result.layers.append((key, key_tangent, value, value_tangent))
        return result


def _split_dual(tensor: Tensor) -> tuple[Tensor, Tensor]:
    primal, tangent = fwAD.unpack_dual(tensor)
    if tangent is None:  # the output does not depend on any tangent parameter
        tangent = torch.zeros_like(primal)
    return primal, tangent


@torch.no_grad()
def linearized_step(
    model: nn.Module,
    primals: Mapping[str, Tensor],
    tangents: Mapping[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    cache: LinearizedCache | None,
    explicit: bool | None = None,
) -> tuple[Tensor, LinearizedCache]:
    """Run the linearized model on new tokens, reusing and extending `cache`.

    Returns the linearized logits f(x; θ0) + J·Δ for the new positions,
    shape (batch, new_tokens, vocab), and the extended cache. `attention_mask`
    covers the cached and the new tokens; `position_ids` covers the new ones.
    `explicit` chooses between explicit tangents (Llama only; None picks them
    where supported) and forward-mode dual tensors with a dual KV cache.
    """
    require_eager_attention(model)
    if explicit is None:
        explicit = supports_explicit_tangents(model)
    if explicit:
        # The lock keeps a concurrent merged-mode request from swapping parameters that this step reads.
        with MODEL_CALL_LOCK:
            return _explicit_llama_step(model, primals, tangents, input_ids, attention_mask, position_ids, cache)
    with MODEL_CALL_LOCK, fwAD.dual_level():
        dual_params = {name: fwAD.make_dual(primals[name], tangents[name]) for name in primals}
        past = cache.to_dual() if cache is not None else None
        with swapped_parameters(model, dual_params):
            output = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past if past is not None else DynamicCache(),
                use_cache=True,
            )
        primal_logits, tangent_logits = _split_dual(output.logits)
        new_cache = LinearizedCache.from_dual(output.past_key_values)
    return primal_logits + tangent_logits, new_cache


# ---------------------------------------------------------------------------
# Explicit tangent propagation for Llama
#
# Forward-mode AD pays for every operator twice over: once for the bookkeeping
# of dual tensors and once for the generic derivative formula. In a decoding
# step of a small model each operator is cheap, so that overhead dominates. On
# the demo model at batch 1 a dual forward took 12 ms against 2 ms for a plain
# one (python -m tsdpo bench, docs/benchmarks.md). The functions below run
# transformers' Llama forward operator by operator on plain tensors and carry
# the tangent next to each activation, with hand-written derivatives. The primal
# side repeats transformers' operators in the same order, so it is bit-identical
# to `model(...)`. A tangent of None stands for zero, so parameters without a
# tangent cost nothing.
# NOTE: the operator order was copied from transformers 5.23. A release that
# changes LlamaModel.forward can break the bit-identity, which
# tests/test_generation.py::test_zero_weights_give_base_logits_exactly checks.

Pair = tuple[Tensor, Tensor | None]


def supports_explicit_tangents(model: nn.Module) -> bool:
    """Return True when `linearized_step` can run `model` with explicit tangents instead of dual tensors.

    That is a plain transformers LlamaForCausalLM with eager attention and
    SiLU activations, in eval mode and without forward hooks, because the
    explicit path bypasses the modules' forward methods.
    """
    from transformers import LlamaForCausalLM

    if type(model) is not LlamaForCausalLM or model.training:
        return False
    config = model.config
    if getattr(config, "_attn_implementation", "eager") != "eager" or config.hidden_act != "silu":
        return False
    return not any(
        module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook") for module in model.modules()
    )


class _Weights:
    """Lookup of a module's parameter and its tangent by the canonical names of `select_parameters`.

    With `track_gradient`, each primal is θ0 with autograd routing its
    gradient to Δ (see _GradientToTangent). Tangents are always detached,
    because tangent operators are never recorded for autograd.
    """

    def __init__(
        self, model: nn.Module, primals: Mapping[str, Tensor], tangents: Mapping[str, Tensor], track_gradient: bool
    ) -> None:
        self.names = _parameter_names(model)
        self.primals = primals
        self.tangents = tangents
        self.track_gradient = track_gradient
        self.looked_up: dict[str, tuple[Tensor, Tensor]] = {}

    def __call__(self, module: nn.Module, attribute: str) -> tuple[Tensor | None, Tensor | None]:
        parameter = module._parameters.get(attribute)
        if parameter is None:  # e.g. a Linear without bias
            return None, None
        name = self.names[(id(module), attribute)]
        if name not in self.primals:
            return parameter, None
        if name not in self.looked_up:
            primal = self.primals[name]
            tangent = self.tangents[name]
            if self.track_gradient:
                primal = _GradientToTangent.apply(primal, tangent)
            self.looked_up[name] = (primal, tangent.detach().to(primal.dtype))
        return self.looked_up[name]


class _GradientToTangent(torch.autograd.Function):
    """Return θ0 unchanged in the forward pass and pass its gradient to Δ in the backward pass."""

    @staticmethod
    def forward(ctx, primal: Tensor, tangent: Tensor) -> Tensor:
        ctx.tangent_dtype = tangent.dtype
        return primal.view_as(primal)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, grad.to(ctx.tangent_dtype)


def _parameter_names(model: nn.Module) -> dict[tuple[int, str], str]:
    return {
        (id(module), attribute): name
        for name, aliases in _parameter_slots(model).items()
        for module, attribute in aliases
    }


def _sum(*terms: Tensor | None) -> Tensor | None:
    present = [term for term in terms if term is not None]
    if not present:
        return None
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total


# Every tangent operator below runs under torch.no_grad(). When training, the
# gradient reaches Δ through the recorded primal operators instead (see _Weights).


def _linear(module: nn.Module, x: Tensor, tx: Tensor | None, weights: _Weights) -> Pair:
    w, tw = weights(module, "weight")
    b, tb = weights(module, "bias")
    y = F.linear(x, w, b)
    with torch.no_grad():
        if tx is not None and tw is not None:
            # tx·wᵀ + x·twᵀ, accumulated in place into one buffer.
            ty = F.linear(tx, w)
            ty.view(-1, ty.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), tw.t())
        else:
            ty = F.linear(tx, w) if tx is not None else (F.linear(x, tw) if tw is not None else None)
        if tb is not None:
            ty = tb.expand(y.shape) if ty is None else ty.add_(tb)
    return y, ty


def _rms_norm(module: nn.Module, x: Tensor, tx: Tensor | None, weights: _Weights) -> Pair:
    w, tw = weights(module, "weight")
    hidden = x.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    inverse_rms = torch.rsqrt(variance + module.variance_epsilon)
    normed = hidden * inverse_rms
    normed_cast = normed.to(x.dtype)
    y = w * normed_cast

    with torch.no_grad():
        tangent_normed = None
        if tx is not None:
            # d(h·r) = dh·r + h·dr, with dr = -r³/2 · mean(2·h·dh).
            t_hidden = tx.to(torch.float32)
            t_variance = (2 * hidden * t_hidden).mean(-1, keepdim=True)
            t_inverse_rms = -0.5 * inverse_rms.pow(3) * t_variance
            tangent_normed = (t_hidden * inverse_rms + hidden * t_inverse_rms).to(x.dtype)
        ty = _sum(
            tw * normed_cast if tw is not None else None,
            w * tangent_normed if tangent_normed is not None else None,
        )
    return y, ty


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    from transformers.models.llama.modeling_llama import rotate_half

    return (x * cos) + (rotate_half(x) * sin)


def _split_heads(x: Tensor | None, batch: int, length: int, head_dim: int) -> Tensor | None:
    return None if x is None else x.view(batch, length, -1, head_dim).transpose(1, 2)


def _attention(
    attention: nn.Module,
    x: Tensor,
    tx: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor | None,
    past: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    weights: _Weights,
) -> tuple[Pair, tuple[Tensor, Tensor, Tensor, Tensor]]:
    from transformers.models.llama.modeling_llama import repeat_kv

    batch, length, _ = x.shape
    head_dim = attention.head_dim
    q, tq = (_split_heads(t, batch, length, head_dim) for t in _linear(attention.q_proj, x, tx, weights))
    k, tk = (_split_heads(t, batch, length, head_dim) for t in _linear(attention.k_proj, x, tx, weights))
    v, tv = (_split_heads(t, batch, length, head_dim) for t in _linear(attention.v_proj, x, tx, weights))

    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    with torch.no_grad():
        # RoPE is linear in q and k, so their tangents rotate the same way.
        tq = _rotate(tq, cos, sin) if tq is not None else None
        tk = _rotate(tk, cos, sin) if tk is not None else torch.zeros_like(k)
        tv = tv if tv is not None else torch.zeros_like(v)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[2], v], dim=-2)
        tk, tv = torch.cat([past[1], tk], dim=-2), torch.cat([past[3], tv], dim=-2)
    layer_cache = (k, tk, v, tv)

    groups = attention.num_key_value_groups
    keys, values = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = torch.matmul(q, keys.transpose(2, 3)) * attention.scaling
    if mask is not None:
        scores = scores + mask
    probabilities32 = F.softmax(scores, dim=-1, dtype=torch.float32)
    probabilities = probabilities32.to(q.dtype)
    output = torch.matmul(probabilities, values).transpose(1, 2).contiguous()
    output = output.reshape(batch, length, -1).contiguous()

    with torch.no_grad():
        t_keys, t_values = repeat_kv(tk, groups), repeat_kv(tv, groups)
        t_scores = _sum(
            torch.matmul(tq, keys.transpose(2, 3)) if tq is not None else None,
            torch.matmul(q, t_keys.transpose(2, 3)),
        ) * attention.scaling
        # d softmax(s) = p ⊙ (ds - Σ p ⊙ ds). The softmax Jacobian is symmetric, so its
        # backward kernel computes this product in one pass, in float32 as the primal softmax.
        t_scores32 = t_scores.to(torch.float32)
        t_probabilities32 = torch._softmax_backward_data(t_scores32, probabilities32, -1, torch.float32)
        t_probabilities = t_probabilities32.to(q.dtype)
        t_output = torch.matmul(t_probabilities, values) + torch.matmul(probabilities, t_values)
        t_output = t_output.transpose(1, 2).reshape(batch, length, -1)
    return _linear(attention.o_proj, output, t_output, weights), layer_cache


def _mlp(mlp: nn.Module, x: Tensor, tx: Tensor | None, weights: _Weights) -> Pair:
    gate, t_gate = _linear(mlp.gate_proj, x, tx, weights)
    up, t_up = _linear(mlp.up_proj, x, tx, weights)
    activated = mlp.act_fn(gate)
    product = activated * up
    with torch.no_grad():
        # silu's backward kernel computes dg · silu'(g) in one pass, the same product as its JVP.
        t_activated = torch.ops.aten.silu_backward(t_gate, gate) if t_gate is not None else None
        if t_activated is not None and t_up is not None:
            t_product = t_activated.mul_(up).addcmul_(activated, t_up)
        elif t_activated is not None:
            t_product = t_activated.mul_(up)
        else:
            t_product = activated * t_up if t_up is not None else None
    return _linear(mlp.down_proj, product, t_product, weights)


def _explicit_linearized_logits(
    model: nn.Module,
    primals: Mapping[str, Tensor],
    tangents: Mapping[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Return (f(x; θ0), J·Δ) as linearized_logits does, with the gradient taken through the primal graph.

    The gradient of a loss L(J·Δ) with respect to Δ is Jᵀ·∂L/∂(J·Δ), which is
    an ordinary backward pass through f at θ0. So the tangent is returned as
    its value plus (f - f.detach()), an exact zero whose derivative is J.
    That backward costs what a standard DPO policy backward costs, and no
    tangent operator is saved for it.
    """
    track_gradient = torch.is_grad_enabled() and any(t.requires_grad for t in tangents.values())
    # Positions count from 0 in every row, as LlamaModel.forward does when given none.
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    with MODEL_CALL_LOCK:
        logits, t_logits, _ = _explicit_llama_forward(
            model, primals, tangents, input_ids, attention_mask, position_ids, None, track_gradient
        )
    if t_logits is None:
        t_logits = torch.zeros_like(logits)
    if not track_gradient:
        return logits, t_logits
    primal_logits = logits.detach()
    return primal_logits, t_logits + (logits - primal_logits)


def _explicit_llama_step(
    model: nn.Module,
    primals: Mapping[str, Tensor],
    tangents: Mapping[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    cache: LinearizedCache | None,
) -> tuple[Tensor, LinearizedCache]:
    logits, t_logits, new_cache = _explicit_llama_forward(
        model, primals, tangents, input_ids, attention_mask, position_ids, cache
    )
    return (logits + t_logits if t_logits is not None else logits), new_cache


def _explicit_llama_forward(
    model: nn.Module,
    primals: Mapping[str, Tensor],
    tangents: Mapping[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor | None,
    position_ids: Tensor,
    cache: LinearizedCache | None,
    track_gradient: bool = False,
) -> tuple[Tensor, Tensor | None, LinearizedCache]:
    """Return the primal logits, their tangent (None when no parameter carries one) and the extended cache.

    With `track_gradient`, the primal logits are recorded for autograd as a
    function of the tangents, with derivative J(x; θ0), and the tangent
    logits are not recorded (see _Weights).
    """
    from transformers.masking_utils import create_causal_mask

    weights = _Weights(model, primals, tangents, track_gradient)
    decoder = model.model
    embedding, t_embedding = weights(decoder.embed_tokens, "weight")
    padding_index = decoder.embed_tokens.padding_idx
    hidden = F.embedding(input_ids, embedding, padding_index)
    with torch.no_grad():
        t_hidden = F.embedding(input_ids, t_embedding, padding_index) if t_embedding is not None else None

    # The mask depends only on the primal keys already cached, as in LlamaModel.forward.
    primal_cache = DynamicCache()
    if cache is not None:
        for layer_index, (key, _, value, _) in enumerate(cache.layers):
            primal_cache.update(key, value, layer_index)
    mask = create_causal_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=attention_mask,
        past_key_values=primal_cache, position_ids=position_ids,
    )
    cos, sin = decoder.rotary_emb(hidden, position_ids=position_ids)

    new_cache = LinearizedCache()
    for layer_index, layer in enumerate(decoder.layers[: model.config.num_hidden_layers]):
        past = cache.layers[layer_index] if cache is not None else None
        normed, t_normed = _rms_norm(layer.input_layernorm, hidden, t_hidden, weights)
        (attended, t_attended), layer_cache = _attention(
            layer.self_attn, normed, t_normed, cos, sin, mask, past, weights
        )
        new_cache.layers.append(layer_cache)
        hidden = hidden + attended
        with torch.no_grad():
            t_hidden = _sum(t_hidden, t_attended)
        normed, t_normed = _rms_norm(layer.post_attention_layernorm, hidden, t_hidden, weights)
        projected, t_projected = _mlp(layer.mlp, normed, t_normed, weights)
        hidden = hidden + projected
        with torch.no_grad():
            t_hidden = _sum(t_hidden, t_projected)

    hidden, t_hidden = _rms_norm(decoder.norm, hidden, t_hidden, weights)
    logits, t_logits = _linear(model.lm_head, hidden, t_hidden, weights)
    return logits, t_logits, new_cache
