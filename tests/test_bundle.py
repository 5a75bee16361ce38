"""Bundle format: round trip, checksums, validation, and loading through the Hub cache."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tsdpo.bundle import BundleError, load_bundle, read_manifest
from tsdpo.hub import HubError, resolve_bundle_source
from tsdpo.vectors import VectorError


def test_bundle_loads_and_steers(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.objectives == ("helpfulness", "verbosity")
    assert bundle.manifest.objectives[0].description == "correct answers"
    assert len(bundle.pareto["grid"]) == 9
    vector = bundle.steerable.vectors["helpfulness"].tensors["model.norm.weight"]
    stored = load_file(str(tiny_bundle / "vectors" / "helpfulness.safetensors"))["model.norm.weight"]
    assert torch.equal(vector, stored)


def test_checksum_mismatch_is_rejected(tiny_bundle):
    path = tiny_bundle / "vectors" / "verbosity.safetensors"
    tensors = load_file(str(path))
    tensors["model.norm.weight"] = tensors["model.norm.weight"] + 1
    save_file(tensors, str(path))
    with pytest.raises(BundleError, match="sha256 .* does not match.*Download the bundle again"):
        load_bundle(tiny_bundle)


def test_shape_mismatch_names_tensor_and_shapes(tiny_bundle):
    """A vector with two extra embedding rows is rejected before anything is applied."""
    path = tiny_bundle / "vectors" / "verbosity.safetensors"
    tensors = load_file(str(path))
    tensors["model.embed_tokens.weight"] = torch.zeros(302, 32)
    save_file(tensors, str(path))
    manifest = json.loads((tiny_bundle / "tsdpo.json").read_text())
    from tsdpo.bundle import sha256_file

    manifest["objectives"][1]["sha256"] = sha256_file(path)
    (tiny_bundle / "tsdpo.json").write_text(json.dumps(manifest))
    with pytest.raises(VectorError, match=r"verbosity: tensor 'model.embed_tokens.weight' has shape \(302, 32\).*\(300, 32\)"):
        load_bundle(tiny_bundle)


def test_bad_manifests_are_explained(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match="not found"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="has no tsdpo.json"):
        read_manifest(tmp_path)
    manifest = json.loads((tiny_bundle / "tsdpo.json").read_text())
    (tiny_bundle / "tsdpo.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        read_manifest(tiny_bundle)
    (tiny_bundle / "tsdpo.json").write_text(json.dumps({**manifest, "objectives": []}))
    with pytest.raises(BundleError, match="lists no objectives"):
        read_manifest(tiny_bundle)


def test_missing_vector_file(tiny_bundle):
    (tiny_bundle / "vectors" / "helpfulness.safetensors").unlink()
    with pytest.raises(BundleError, match="vector file of objective 'helpfulness' not found"):
        load_bundle(tiny_bundle)


def populate_hub_cache(folder, repo_id, commit):
    """Lay a bundle out the way huggingface_hub caches a model repo at `commit` on main."""
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit, dirs_exist_ok=True)


def test_hub_bundle_loads_offline_from_cache(tiny_bundle_template):
    commit = "0123456789abcdef0123456789abcdef01234567"
    populate_hub_cache(tiny_bundle_template, "tsdpo-test/tiny-bundle", commit)
    path, loaded_commit = resolve_bundle_source("tsdpo-test/tiny-bundle")
    assert loaded_commit == commit
    bundle = load_bundle(path, commit=loaded_commit)
    assert bundle.objectives == ("helpfulness", "verbosity")
    path_by_sha, _ = resolve_bundle_source("tsdpo-test/tiny-bundle", revision=commit)
    assert path_by_sha == path


def test_uncached_hub_bundle_offline_is_explained():
    with pytest.raises(HubError, match="not in the local cache.*unset HF_HUB_OFFLINE"):
        resolve_bundle_source("tsdpo-test/never-downloaded")
    with pytest.raises(HubError, match="neither an existing folder nor a Hub repo id"):
        resolve_bundle_source("not a repo id!")
