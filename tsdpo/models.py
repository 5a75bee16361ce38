"""Loading base models for the linearized paths."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not supported; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


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
    forward-mode derivative. `revision` pins a branch, tag or commit sha on
    the Hub; `trust_remote_code` stays off unless the caller turns it on.
    """
    torch_dtype = resolve_dtype(dtype)
    common = {"revision": revision, "trust_remote_code": trust_remote_code, "local_files_only": local_files_only}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=torch_dtype, attn_implementation="eager", **common
    )
    model.to(device).eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded %s (revision %s) as %s on %s", name_or_path, revision or "default", dtype, device)
    return model, tokenizer
