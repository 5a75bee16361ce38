"""Base models for the linearized paths: loading at a pinned revision, parameter subsets, checks and sizes."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RevisionResolutionError
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from tsdpo.hub import describe_download_error
from tsdpo.tangent import linearized_logits, select_parameters

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
TANGENT_BYTES_PER_PARAMETER = 4  # Δ, its gradient and both Adam moments are float32


class BaseModelMismatchError(ValueError):
    """The loaded base model is not the one a bundle's manifest names."""


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not supported; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def resolve_commit(name_or_path: str, revision: str | None = None, local_files_only: bool = False) -> str | None:
    """Return the full commit sha that `revision` of a Hub model points to, or None for a local folder.

    In offline mode (HF_HUB_OFFLINE=1) or with `local_files_only`, the commit
    comes from the local cache's refs/ folder, as huggingface_hub recorded it
    at the last download.
    """
    if Path(name_or_path).expanduser().exists():
        return None
    try:
        resolved = HfApi().resolve_revision(
            name_or_path, revision=revision, local_files_only=local_files_only or constants.is_offline_mode()
        )
    except (HfHubHTTPError, RevisionResolutionError) as err:
        raise describe_download_error(err, name_or_path, revision) from err
    return resolved.resolved


def load_base_model(
    name_or_path: str,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    local_files_only: bool = False,
):
    """Load a causal LM and its tokenizer with eager attention, frozen and in eval mode.

    Eager attention is required because fused attention kernels have no
    forward-mode derivative. `revision` is a branch, tag or commit sha on the
    Hub. It is resolved to one commit first, so the model and the tokenizer
    come from the same commit even if the branch moves meanwhile.
    `trust_remote_code` stays off unless the caller turns it on.
    """
    torch_dtype = resolve_dtype(dtype)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} needs CUDA, which this torch build or machine lacks; use device='cpu'")
    commit = resolve_commit(name_or_path, revision, local_files_only)
    common = {
        "revision": commit or revision, "trust_remote_code": trust_remote_code, "local_files_only": local_files_only
    }
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=torch_dtype, attn_implementation="eager", **common
    )
    model.to(device).eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    logger.info(
        "loaded %s (revision %s, commit %s) as %s on %s",
        name_or_path, revision or "default", commit or "local folder", dtype, device,
    )
    return model, tokenizer


def base_model_reference(
    repo_id: str, model: nn.Module, revision: str | None = None, commit: str | None = None
) -> dict[str, str]:
    """Build the manifest's base_model entry for a Hub model: repo id, revision, commit and architecture.

    `revision` is the branch, tag or sha the user requested, and `commit` is
    the sha it resolved to when the vectors were trained. `check_base_model`
    compares that sha with the one the revision resolves to at load time.
    """
    reference = {"repo_id": repo_id, "revision": revision or constants.DEFAULT_REVISION}
    if commit:
        reference["commit"] = commit
    reference["model_type"] = model.config.model_type
    reference["architecture"] = type(model).__name__
    return reference


def check_base_model(reference: Mapping[str, str], model: nn.Module | None = None, commit: str | None = None) -> None:
    """Raise BaseModelMismatchError when the loaded base model differs from the manifest's reference.

    `commit` is the sha the base model was loaded at. It is compared with the
    reference's "commit", or with its "revision" when that is a full sha.
    `model` is compared on "model_type" and "architecture". Each error names
    the manifest field and both values. Fields the reference lacks are not checked.
    """
    revision = reference.get("revision")
    if reference.get("commit"):
        field, expected = "commit", reference["commit"]
    elif revision and COMMIT_SHA.match(revision):
        field, expected = "revision", revision
    else:
        field, expected = None, None
    if field and commit and commit != expected:
        raise BaseModelMismatchError(
            f"base_model.{field} in the manifest is {expected}, but the base model {reference.get('repo_id')} "
            f"was loaded at commit {commit} (revision {revision!r}); the vectors were trained on {expected}. "
            f"Load the base model at revision {expected}."
        )
    if model is None:
        return
    loaded = {"model_type": model.config.model_type, "architecture": type(model).__name__}
    for key, value in loaded.items():
        if key in reference and reference[key] != value:
            raise BaseModelMismatchError(
                f"base_model.{key} in the manifest is {reference[key]!r}, but the loaded base model has "
                f"{key} {value!r}; the vectors belong to another model"
            )


def count_blocks(config: PretrainedConfig) -> int:
    """Return the number of transformer blocks, read from the (text) config's num_hidden_layers."""
    text_config = config.get_text_config()
    layers = getattr(text_config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(
            f"config of model_type {config.model_type!r} has no num_hidden_layers; pass parameter patterns instead"
        )
    return layers


def block_prefix(model: nn.Module) -> str:
    """Return the module name of the list of transformer blocks.

    It is the first nn.ModuleList with one entry per layer of the config:
    "model.layers" in Llama and Qwen2, "transformer.h" in GPT-2.
    """
    layers = count_blocks(model.config)
    for name, module in model.named_modules():
        if name and isinstance(module, nn.ModuleList) and len(module) == layers:
            return name
    raise ValueError(
        f"found no list of {layers} transformer blocks in {type(model).__name__}; "
        f"pass parameter patterns such as r'layers\\.3\\.' instead"
    )


def last_blocks_patterns(model: nn.Module, k: int) -> list[str]:
    """Return a regex that selects the parameters of the last `k` transformer blocks.

    For a 24-layer Qwen2 and k=2 it is ["^model\\.layers\\.(22|23)\\."]. Use it
    as `parameter_patterns` for training and in the bundle manifest.
    """
    layers = count_blocks(model.config)
    if not 1 <= k <= layers:
        raise ValueError(f"k={k} blocks requested, but the model has {layers}; choose 1 <= k <= {layers}")
    indices = "|".join(str(i) for i in range(layers - k, layers))
    return [rf"^{re.escape(block_prefix(model))}\.({indices})\."]


def attention_patterns(model: nn.Module) -> list[str]:
    """Return a regex that selects the attention parameters of every block (not the MLPs, norms or embeddings)."""
    prefix = block_prefix(model)
    first_block = model.get_submodule(f"{prefix}.0")
    names = [name for name, child in first_block.named_children() if "attention" in type(child).__name__.lower()]
    if not names:
        raise ValueError(f"found no attention module in {prefix}.0 of {type(model).__name__}")
    return [rf"^{re.escape(prefix)}\.\d+\.({'|'.join(map(re.escape, names))})\."]


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of the TS-DPO training state in bytes, activations excluded: an estimate from parameter counts."""

    base: int  # θ0 in the model's dtype
    tangent: int  # Δ in float32
    tangent_cast: int  # the copy of Δ in the model's dtype that the JVP reads (0 for a float32 model)
    gradient: int  # dL/dΔ in float32
    adam: int  # Adam's two moments in float32

    @property
    def total(self) -> int:
        return self.base + self.tangent + self.tangent_cast + self.gradient + self.adam


def estimate_training_memory(total_parameters: int, tangent_parameters: int, dtype: str = "bfloat16") -> MemoryEstimate:
    """Estimate the memory of θ0, Δ, its gradient and Adam's state, without activations."""
    element = torch.empty((), dtype=resolve_dtype(dtype)).element_size()
    tangent = TANGENT_BYTES_PER_PARAMETER * tangent_parameters
    return MemoryEstimate(
        base=element * total_parameters,
        tangent=tangent,
        tangent_cast=0 if element == TANGENT_BYTES_PER_PARAMETER else element * tangent_parameters,
        gradient=tangent,
        adam=2 * tangent,
    )


def count_parameters(model: nn.Module, patterns: list[str] | None = None) -> int:
    """Count the parameters that carry a tangent; tied parameters count once."""
    return sum(p.numel() for p in select_parameters(model, patterns).values())


def count_saved_activation_bytes(model: nn.Module, patterns: list[str] | None, sequences: int, length: int) -> int:
    """Count the activation bytes autograd saves for the backward pass of one TS-DPO micro-batch.

    Runs the linearized forward on sequences of `length` tokens and a
    log-softmax over the vocabulary, as the DPO loss does, and adds up every
    tensor saved for backward. Saved weights are references to memory the
    model holds already and do not grow with the batch, so the count is taken
    at one and two sequences and the difference is scaled to `sequences`.
    Views are counted once per save, which makes this an upper bound; the
    temporary buffers of the forward and backward passes come on top. Build
    the model on the meta device (`with torch.device("meta"): ...`) to count
    real model sizes without allocating memory.
    """
    params = select_parameters(model, patterns)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)  # θ0 is frozen in training, and a trainable θ0 would save the whole primal pass
    try:
        one, two = (_saved_bytes(model, params, batch, length) for batch in (1, 2))
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return (two - one) * sequences


def _saved_bytes(model: nn.Module, params: dict[str, torch.Tensor], sequences: int, length: int) -> int:
    device = next(model.parameters()).device
    delta = {name: torch.zeros(p.shape, device=device, requires_grad=True) for name, p in params.items()}
    input_ids = torch.zeros(sequences, length, dtype=torch.long, device=device)
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        primal, tangent = linearized_logits(model, params, delta, input_ids, torch.ones_like(input_ids))
        torch.log_softmax((primal + tangent).float(), dim=-1).sum()
    return saved
