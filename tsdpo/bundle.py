"""The bundle: a folder (or Hub model repo) with a base model reference, vectors and their evaluation.

Layout:

    tsdpo.json                      manifest: format version, base model, objectives with sha256
    vectors/<objective>.safetensors one tangent vector per objective
    pareto.json                     the evaluated weight grid, baselines and base point
    README.md                       model card
    base/                           the base model, only when it is not on the Hub
    eval_set.jsonl                  optional held-out prompts for bundles that ship scorers

Loading checks every checksum and validates every vector against the base
model before anything is returned, so a bad bundle is rejected whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tsdpo.compose import DEFAULT_WEIGHT_RANGE, MODES, SteerableModel
from tsdpo.models import BaseModelMismatchError, check_base_model, load_base_model, resolve_commit
from tsdpo.vectors import TangentVector, load_vector, save_vector

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "tsdpo.json"
PARETO_NAME = "pareto.json"
EVAL_SET_NAME = "eval_set.jsonl"


class BundleError(ValueError):
    """A bundle is missing, malformed, or does not match its base model."""


@dataclass
class ObjectiveEntry:
    """One objective of a bundle and the vector file that steers it."""

    name: str
    file: str  # path inside the bundle, e.g. vectors/helpfulness.safetensors
    sha256: str
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The parsed tsdpo.json."""

    base_model: dict[str, str]  # {"path": "base"} inside the bundle, or {"repo_id": ..., "revision": ...}
    objectives: list[ObjectiveEntry]
    format_version: int = FORMAT_VERSION
    modes: list[str] = field(default_factory=lambda: list(MODES))
    weight_range: list[float] = field(default_factory=lambda: list(DEFAULT_WEIGHT_RANGE))
    parameter_patterns: list[str] | None = None  # the parameters that carry a tangent; None means all
    scorer: str | None = None  # name of a built-in scorer that can measure this bundle's eval set
    synthetic: bool = False  # True for the embedded demo world
    description: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "Manifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{source}: format_version {version!r} is not supported; this tsdpo reads version "
                f"{FORMAT_VERSION}. Upgrade tsdpo or rebuild the bundle."
            )
        for key in ("base_model", "objectives"):
            if key not in data:
                raise BundleError(f"{source}: the manifest lacks the required field {key!r}")
        base = data["base_model"]
        if not isinstance(base, dict) or not ("path" in base or "repo_id" in base):
            raise BundleError(f"{source}: base_model must give 'path' or 'repo_id' (and 'revision'), got {base!r}")
        objectives = []
        for entry in data["objectives"]:
            missing = [k for k in ("name", "file", "sha256") if k not in entry]
            if missing:
                raise BundleError(f"{source}: an objective entry lacks {missing}: {entry!r}")
            objectives.append(ObjectiveEntry(**entry))
        if not objectives:
            raise BundleError(f"{source}: the manifest lists no objectives")
        fields = {k: v for k, v in data.items() if k not in ("base_model", "objectives")}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            logger.warning("%s: ignoring unknown manifest fields %s", source, unknown)
        return cls(base_model=base, objectives=objectives, **{k: v for k, v in fields.items() if k in known})


@dataclass
class Bundle:
    """A loaded bundle: the steerable model plus everything the app shows."""

    path: Path
    manifest: Manifest
    model: torch.nn.Module
    tokenizer: Any
    steerable: SteerableModel
    pareto: dict[str, Any] | None
    eval_set: list[dict[str, Any]]
    commit: str | None = None  # the Hub commit the bundle came from, when it came from the Hub

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.steerable.objectives


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str | Path) -> Manifest:
    """Parse and check a bundle's tsdpo.json."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise BundleError(f"bundle folder {directory} not found; pass a folder that contains {MANIFEST_NAME}")
    if not path.is_file():
        raise BundleError(f"{directory} has no {MANIFEST_NAME}, so it is not a tsdpo bundle")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from err
    return Manifest.from_dict(data, str(path))


def write_bundle(
    directory: str | Path,
    base_model: dict[str, str],
    vectors: dict[str, TangentVector],
    descriptions: dict[str, str] | None = None,
    training: dict[str, dict[str, Any]] | None = None,
    **manifest_fields: Any,
) -> Manifest:
    """Write vectors and the manifest into `directory`; pareto.json and the card are written separately."""
    directory = Path(directory)
    entries = []
    for name, vector in vectors.items():
        relative = f"vectors/{name}.safetensors"
        save_vector(vector, directory / relative)
        entries.append(
            ObjectiveEntry(
                name=name,
                file=relative,
                sha256=sha256_file(directory / relative),
                description=(descriptions or {}).get(name, ""),
                training=(training or {}).get(name, {}),
            )
        )
    manifest = Manifest(base_model=base_model, objectives=entries, **manifest_fields)
    (directory / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest


def verify_checksums(directory: Path, manifest: Manifest) -> None:
    """Raise BundleError unless every vector file exists and matches its sha256."""
    for entry in manifest.objectives:
        path = directory / entry.file
        if not path.is_file():
            raise BundleError(f"{path}: vector file of objective {entry.name!r} not found")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise BundleError(
                f"{path}: sha256 {actual} does not match the manifest's {entry.sha256}; the file is "
                f"incomplete or was changed. Download the bundle again."
            )


def _check_base(directory: Path, base: dict[str, str], model=None, commit: str | None = None) -> None:
    try:
        check_base_model(base, model=model, commit=commit)
    except BaseModelMismatchError as err:
        raise BundleError(f"{directory / MANIFEST_NAME}: {err}") from err


def _check_parameter_subset(vectors: dict[str, TangentVector], patterns: list[str]) -> None:
    """Raise BundleError for a tensor outside the parameter subset the manifest records."""
    compiled = [re.compile(p) for p in patterns]
    for objective, vector in vectors.items():
        for name in vector.tensors:
            if not any(c.search(name) for c in compiled):
                raise BundleError(
                    f"{objective}: tensor {name!r} matches none of the manifest's parameter_patterns {patterns}; "
                    f"the vector was trained on another parameter subset"
                )


def load_bundle(
    directory: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    commit: str | None = None,
    local_files_only: bool = False,
) -> Bundle:
    """Load a bundle folder: verify checksums, load the base model, validate every vector."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_checksums(directory, manifest)

    base = manifest.base_model
    if "path" in base:
        model, tokenizer = load_base_model(str(directory / base["path"]), dtype=dtype, device=device)
    else:
        # Resolve the revision once, so the commit checked is the commit loaded.
        base_commit = resolve_commit(base["repo_id"], base.get("revision"), local_files_only)
        _check_base(directory, base, commit=base_commit)
        model, tokenizer = load_base_model(
            base["repo_id"], revision=base_commit or base.get("revision"), dtype=dtype, device=device,
            local_files_only=local_files_only,
        )
    _check_base(directory, base, model=model)

    vectors = {entry.name: load_vector(directory / entry.file) for entry in manifest.objectives}
    if manifest.parameter_patterns is not None:
        _check_parameter_subset(vectors, manifest.parameter_patterns)
    # SteerableModel validates all vectors before keeping any of them.
    steerable = SteerableModel(model, vectors, weight_range=tuple(manifest.weight_range))

    pareto_path = directory / PARETO_NAME
    pareto = json.loads(pareto_path.read_text()) if pareto_path.is_file() else None
    eval_path = directory / EVAL_SET_NAME
    eval_set = [json.loads(line) for line in eval_path.read_text().splitlines() if line.strip()] if eval_path.is_file() else []
    return Bundle(directory, manifest, model, tokenizer, steerable, pareto, eval_set, commit)
