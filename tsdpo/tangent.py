"""The linearized model f_lin(x; θ0 + Δ) = f(x; θ0) + J(x; θ0)·Δ.

Training uses one `torch.func.jvp` per batch: its primal output is the base
model's logits (the DPO reference) and its tangent output is J·Δ. Decoding uses
forward-mode dual tensors from `torch.autograd.forward_ad`, with a KV cache that
holds dual tensors, so each new token costs one incremental forward.

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
) -> tuple[Tensor, Tensor]:
    """Return (f(x; θ0), J(x; θ0)·Δ) from one forward-mode JVP.

    `primals` holds θ0 for the parameters that carry a tangent and `tangents`
    holds Δ for the same names. Parameters not in `primals` keep the module's
    own values and get no tangent. Both outputs have shape (batch, seq, vocab).
    The tangent output is differentiable with respect to `tangents`, which is
    how TS-DPO trains Δ with ordinary autograd.
    """
    require_eager_attention(model)
    names = list(primals)
    missing = [name for name in names if name not in tangents]
    if missing:
        raise KeyError(f"tangents lack the parameters {missing[:5]!r}")

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
) -> tuple[Tensor, LinearizedCache]:
    """Run the linearized model on new tokens, reusing and extending `cache`.

    Returns the linearized logits f(x; θ0) + J·Δ for the new positions,
    shape (batch, new_tokens, vocab), and the extended cache. `attention_mask`
    covers the cached and the new tokens; `position_ids` covers the new ones.
    """
    require_eager_attention(model)
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
