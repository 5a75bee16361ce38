"""Compose a base model with weighted tangent vectors, without mutating it.

Two inference modes:
- `tangent`: the linearized model f(x; θ0) + J·Σ α_k Δ_k, decoded exactly with
  explicit tangents (Llama) or dual tensors (other models). Logit shifts of the objectives add exactly.
- `merged`: an ordinary forward with θ0 + Σ α_k Δ_k, a fast approximation that
  agrees with `tangent` to first order.

Σ α_k Δ_k is formed in float32 and cast once to the model's dtype. The base
model's parameters are never written: each request gets its own parameter
dictionary, swapped into the shared module for each forward under a lock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from tsdpo.tangent import (
    MODEL_CALL_LOCK,
    LinearizedCache,
    linearized_step,
    require_eager_attention,
    select_parameters,
    swapped_parameters,
)
from tsdpo.vectors import TangentVector, canonicalize_tied, combine_vectors, validate_vector

Mode = Literal["tangent", "merged"]
MODES: tuple[str, ...] = get_args(Mode)

# Weights outside this range extrapolate far beyond where the linearization
# was trained; bundles may set their own range in the manifest.
DEFAULT_WEIGHT_RANGE = (-1.0, 2.0)


class SteerableModel:
    """A frozen base model plus validated tangent vectors, shared by all requests."""

    def __init__(
        self,
        model: nn.Module,
        vectors: Mapping[str, TangentVector],
        weight_range: tuple[float, float] = DEFAULT_WEIGHT_RANGE,
        cache_size: int = 8,
    ) -> None:
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.weight_range = (float(weight_range[0]), float(weight_range[1]))
        self.parameters = select_parameters(model)

        # Validate everything before keeping anything, so a bad vector leaves no trace.
        canonical = {name: canonicalize_tied(vector, model) for name, vector in vectors.items()}
        for name, vector in canonical.items():
            validate_vector(vector, self.parameters, objective=name)
        self.vectors = canonical
        self.objectives = tuple(canonical)
        self._composed: OrderedDict[tuple, dict[str, Tensor]] = OrderedDict()  # see _cached
        self._cache_size = cache_size

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters.values())).dtype

    def check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Return one float weight per objective, or raise ValueError naming the bad one."""
        unknown = sorted(set(weights) - set(self.objectives))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; this model has {list(self.objectives)}")
        low, high = self.weight_range
        checked = {}
        for objective in self.objectives:
            value = float(weights.get(objective, 0.0))
            if not math.isfinite(value):
                raise ValueError(f"weight {objective}={value} is not a finite number; pass a value in [{low}, {high}]")
            if not low <= value <= high:
                raise ValueError(
                    f"weight {objective}={value} is outside the supported range [{low}, {high}]; "
                    f"choose a value inside it"
                )
            checked[objective] = value
        return checked

    def delta(self, weights: Mapping[str, float]) -> dict[str, Tensor]:
        """Return Σ α_k Δ_k cast to the model's dtype, cached per weight tuple.

        The cache means a slider change composes once, not once per token.
        """
        checked = self.check_weights(weights)

        def compose() -> dict[str, Tensor]:
            combined = combine_vectors(self.vectors, checked)  # float32
            return {name: d.to(self.parameters[name].dtype) for name, d in combined.items()}

        return self._cached("delta", checked, compose)

    def _cached(
        self, kind: str, checked: dict[str, float], compose: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Return compose() for these weights from the LRU cache, computing it on a miss.

        Deltas and merged parameters share the cache, so it keeps at most
        cache_size parameter sets. Callers must not modify the result.
        """
        key = (kind, *(checked[o] for o in self.objectives))
        with MODEL_CALL_LOCK:
            if key in self._composed:
                self._composed.move_to_end(key)
                return self._composed[key]
        value = compose()
        with MODEL_CALL_LOCK:
            self._composed[key] = value
            while len(self._composed) > self._cache_size:
                self._composed.popitem(last=False)
        return value

    def merged_parameters(self, weights: Mapping[str, float]) -> dict[str, Tensor]:
        """Return θ0 + Σ α_k Δ_k for the parameters the vectors touch, in the model's dtype."""
        checked = self.check_weights(weights)
        combined = combine_vectors(self.vectors, checked)  # float32, freshly allocated
        merged = {}
        for name, d in combined.items():
            # Adding θ0 into the fresh sum saves an allocation; float addition commutes, so the
            # result is bit-identical to θ0.float() + d.
            merged[name] = d.add_(self.parameters[name]).to(self.parameters[name].dtype)
        return merged

    def decoder(self, weights: Mapping[str, float], mode: Mode = "tangent") -> "Decoder":
        """Return a fresh incremental decoder for one request."""
        if mode == "tangent":
            require_eager_attention(self.model)
            delta = self.delta(weights)
            primals = {name: self.parameters[name] for name in delta}
            return TangentDecoder(self.model, primals, delta)
        if mode == "merged":
            checked = self.check_weights(weights)
            return MergedDecoder(self.model, self._cached("merged", checked, lambda: self.merged_parameters(checked)))
        raise ValueError(f"mode={mode!r} is not one of {MODES}")


class Decoder:
    """Incremental forward with a per-request KV cache."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Return logits (batch, new_tokens, vocab) for the new tokens and extend the cache."""
        raise NotImplementedError


class TangentDecoder(Decoder):
    def __init__(self, model: nn.Module, primals: dict[str, Tensor], tangents: dict[str, Tensor]) -> None:
        self.model = model
        self.primals = primals
        self.tangents = tangents
        self.cache: LinearizedCache | None = None

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        logits, self.cache = linearized_step(
            self.model, self.primals, self.tangents, input_ids, attention_mask, position_ids, self.cache
        )
        return logits


class MergedDecoder(Decoder):
    def __init__(self, model: nn.Module, parameters: dict[str, Tensor]) -> None:
        self.model = model
        self.parameters = parameters
        self.cache = DynamicCache()

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        with MODEL_CALL_LOCK, swapped_parameters(self.model, self.parameters):
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=self.cache,
                use_cache=True,
            )
        self.cache = output.past_key_values
        return output.logits
