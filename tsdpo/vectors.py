"""Tangent vectors: safetensors IO, validation against a base model, and algebra.

A tangent vector Δ maps parameter names of the base model to tensors of the
same shapes. Files are safetensors only (never pickle), with str -> str
metadata such as objective, base_model, beta, steps and data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn


class VectorError(ValueError):
    """A tangent vector is unreadable or does not fit the base model."""


@dataclass
class TangentVector:
    """Δ for one objective: parameter name -> tensor, plus string metadata."""

    tensors: dict[str, Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: type(v).__name__ for k, v in self.metadata.items() if not isinstance(v, str)}
        if bad:
            raise TypeError(f"safetensors metadata values must be str; convert {bad!r} with str() or json.dumps()")


def save_vector(vector: TangentVector, path: str | Path) -> None:
    """Write a vector as safetensors with its metadata."""
    if not vector.tensors:
        raise VectorError("refusing to save a tangent vector with no tensors")
    tensors = {name: t.detach().contiguous().cpu() for name, t in vector.tensors.items()}
    storages: dict[int, str] = {}
    for name, tensor in tensors.items():
        other = storages.setdefault(tensor.untyped_storage().data_ptr(), name)
        if other != name:
            raise VectorError(
                f"tensors {other!r} and {name!r} share memory, as tied parameters do; keep one of them "
                f"(tsdpo.vectors.canonicalize_tied folds tied aliases into one name)"
            )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=vector.metadata)
    _sort_header(Path(path))
    # safetensors creates files readable by their owner only; give them the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _sort_header(path: Path) -> None:
    """Rewrite the safetensors header with sorted keys, so equal vectors give equal bytes.

    safetensors 0.8 stores metadata in a hash map, so its key order, and with it
    the file's sha256 in a bundle manifest, changes from one process to the next.
    """
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(canonical) > length:
            raise VectorError(f"{path}: cannot rewrite the safetensors header in place")
        handle.seek(8)
        handle.write(canonical.ljust(length))  # the format pads headers with spaces


def load_vector(path: str | Path) -> TangentVector:
    """Read a safetensors vector, with messages for the usual failures."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise VectorError(f"{path}: tangent vectors are read from .safetensors files only, never pickle")
    if not path.is_file():
        raise VectorError(f"{path}: vector file not found")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_length))
    except (SafetensorError, ValueError, OSError) as err:
        raise VectorError(
            f"{path}: the vector file is incomplete or corrupt ({err}); download or copy it again"
        ) from err
    if not tensors:
        raise VectorError(f"{path}: the vector file contains no tensors")
    return TangentVector(tensors, dict(header.get("__metadata__", {})))


def tied_parameter_aliases(model: nn.Module) -> dict[str, str]:
    """Map each alias name of a tied parameter to the name it is stored under.

    `model.named_parameters()` lists a tied parameter once; the others
    (for example lm_head.weight tied to model.embed_tokens.weight) are aliases.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if canonical[id(p)] != name:
            aliases[name] = canonical[id(p)]
    return aliases


def canonicalize_tied(vector: TangentVector, model: nn.Module) -> TangentVector:
    """Fold tied-parameter aliases into their canonical names.

    A tied parameter carries one delta, applied once. A file that contains an
    alias and its canonical name with different values is an error, because
    there is no single delta to apply.
    """
    aliases = tied_parameter_aliases(model)
    tensors = dict(vector.tensors)
    for alias, name in aliases.items():
        if alias not in tensors:
            continue
        value = tensors.pop(alias)
        if name in tensors and not torch.equal(tensors[name], value):
            raise VectorError(
                f"{alias!r} and {name!r} are one tied parameter, but the vector contains different "
                f"values for them; keep only {name!r}"
            )
        tensors[name] = value
    return TangentVector(tensors, dict(vector.metadata))


def validate_vector(vector: TangentVector, parameters: Mapping[str, Tensor], objective: str = "vector") -> None:
    """Raise VectorError unless every tensor fits the base model's parameters.

    Checks every key, shape, floating dtype and finiteness before anything is
    applied, so a bad vector is rejected whole. `parameters` maps names to the
    base model's tensors (or to the subset that carries a tangent).
    """
    for name, tensor in vector.tensors.items():
        if name not in parameters:
            raise VectorError(
                f"{objective}: tensor {name!r} is not a parameter of the base model, whose parameters "
                f"are named like {next(iter(parameters))!r}; was the vector trained on another model?"
            )
        expected = parameters[name].shape
        if tensor.shape != expected:
            raise VectorError(
                f"{objective}: tensor {name!r} has shape {tuple(tensor.shape)} but the base model's "
                f"parameter has shape {tuple(expected)}; the vector belongs to another model or revision"
            )
        if not tensor.is_floating_point():
            raise VectorError(f"{objective}: tensor {name!r} has dtype {tensor.dtype}; expected a floating dtype")
        if not torch.isfinite(tensor).all():
            raise VectorError(f"{objective}: tensor {name!r} contains NaN or infinite values")


def combine_vectors(vectors: Mapping[str, TangentVector], weights: Mapping[str, float]) -> dict[str, Tensor]:
    """Return Σ_k α_k Δ_k in float32, over the union of the vectors' parameters.

    A parameter absent from a vector counts as a zero delta for it.
    """
    unknown = set(weights) - set(vectors)
    if unknown:
        raise KeyError(f"weights name unknown objectives {sorted(unknown)}; known: {sorted(vectors)}")
    total: dict[str, Tensor] = {}
    for objective, vector in vectors.items():
        alpha = float(weights.get(objective, 0.0))
        if not math.isfinite(alpha):
            raise ValueError(f"weight for {objective!r} is {alpha}; weights must be finite numbers")
        for name, delta in vector.tensors.items():
            if name in total:
                total[name].add_(delta, alpha=alpha)  # reads Δ_k once, no temporary
            else:
                total[name] = torch.mul(delta.float(), alpha)
    return total
