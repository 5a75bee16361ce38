"""Hub download, publishing, model card, integrity and ZeroGPU, through huggingface_hub's own client.

Download and push tests run the real snapshot_download and HfApi against the
mock Hub of tests/hub_server.py on 127.0.0.1, so they exercise
huggingface_hub's request, cache and error-mapping code. The Hub itself is
never contacted: `loopback_only` makes any other connection fail.
"""

import argparse
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants, metadata_load
from hub_server import MockHub, folder_files, hub_endpoint, loopback_only  # noqa: F401  (pytest fixtures)
from safetensors.torch import save_file

from tsdpo.bundle import BundleError, load_bundle, read_manifest, sha256_file
from tsdpo.card import model_card
from tsdpo.hub import (
    BUNDLE_PATTERNS,
    HubError,
    add_push_parser,
    download_bundle,
    is_repo_id,
    push_bundle,
    resolve_bundle_source,
)
from tsdpo.vectors import VectorError, load_vector
from tsdpo.zerogpu import gpu_task

pytestmark = pytest.mark.usefixtures("loopback_only")

REPO = "tsdpo-test/bundle"
TOKEN = "hf_alice_token"


@pytest.fixture
def hub(hub_endpoint, tmp_path, monkeypatch):
    """The mock Hub with user alice and no token in the environment or on disk."""
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    hub_endpoint.add_user("alice", TOKEN)
    return hub_endpoint


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh huggingface_hub cache for one test."""
    folder = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


def seed_bundle_repo(hub: MockHub, bundle: Path, repo_id: str = REPO, **repo_options) -> dict[str, str]:
    """Create a repo holding `bundle` at two commits; return the shas of "v1" (tagged) and "main"."""
    hub.create_repo(repo_id, **repo_options)
    files = {**folder_files(bundle), "training/log.txt": b"not part of the download\n"}
    first = hub.commit(repo_id, files, message="first bundle")
    hub.tag(repo_id, "v1", first)
    pareto = json.loads(files["pareto.json"])
    pareto["eval_prompts"] = 99
    second = hub.commit(repo_id, {"pareto.json": json.dumps(pareto).encode()}, message="re-evaluate")
    return {"v1": first, "main": second}


def go_offline(monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# Download.


def test_download_branch_tag_and_sha(hub, cache_dir, tiny_bundle_template):
    commits = seed_bundle_repo(hub, tiny_bundle_template)

    for revision, expected in [(None, commits["main"]), ("main", commits["main"]), ("v1", commits["v1"]),
                               (commits["v1"], commits["v1"])]:
        path, commit = download_bundle(REPO, revision)
        assert commit == expected
        assert path == cache_dir / "models--tsdpo-test--bundle" / "snapshots" / expected
        assert json.loads((path / "pareto.json").read_text()) == json.loads(hub.files(REPO, expected)["pareto.json"])

    assert not (path / "training").exists()  # allow_patterns keeps extras out
    assert {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} == {
        name for name in hub.files(REPO) if name != "training/log.txt" and name != ".gitattributes"
    }
    assert "README.md" in BUNDLE_PATTERNS


def test_downloaded_bundle_loads_offline_from_cache(hub, cache_dir, tiny_bundle_template, monkeypatch):
    commits = seed_bundle_repo(hub, tiny_bundle_template)
    download_bundle(REPO)
    download_bundle(REPO, "v1")
    requests_online = len(hub.requests)
    hub.stop()
    go_offline(monkeypatch)

    for revision, expected in [(None, commits["main"]), ("v1", commits["v1"]), (commits["v1"], commits["v1"])]:
        path, commit = resolve_bundle_source(REPO, revision)
        assert commit == expected
    bundle = load_bundle(path, commit=commit)
    assert bundle.commit == commits["v1"]
    assert bundle.objectives == ("helpfulness", "verbosity")
    assert len(hub.requests) == requests_online


def test_private_repo_without_token(hub, cache_dir, tiny_bundle_template):
    seed_bundle_repo(hub, tiny_bundle_template, owner="alice", private=True)
    with pytest.raises(HubError, match=r"not found on the Hub, or it is private and no token was sent.*hf auth login"):
        download_bundle(REPO)


def test_private_repo_with_owner_token(hub, cache_dir, tiny_bundle_template, monkeypatch):
    commits = seed_bundle_repo(hub, tiny_bundle_template, repo_id="alice/private", owner="alice", private=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _, commit = download_bundle("alice/private")
    assert commit == commits["main"]


def test_missing_repo_with_token(hub, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubError, match=r"not found on the Hub, or your token's account has no read access.*whoami"):
        download_bundle("tsdpo-test/no-such-bundle")


def test_missing_revision(hub, cache_dir, tiny_bundle_template):
    seed_bundle_repo(hub, tiny_bundle_template)
    with pytest.raises(HubError, match=r"has no revision 'v9'; pass an existing branch, tag or full 40-character"):
        download_bundle(REPO, "v9")
    with pytest.raises(HubError, match="has no revision '0{40}'"):
        download_bundle(REPO, "0" * 40)


def test_gated_repo(hub, cache_dir, tiny_bundle_template):
    seed_bundle_repo(hub, tiny_bundle_template, gated=True)
    with pytest.raises(HubError, match=rf"gated repo: accept its conditions at {hub.url}/{REPO}"):
        download_bundle(REPO)


def test_rejected_token(hub, cache_dir, tiny_bundle_template, monkeypatch):
    seed_bundle_repo(hub, tiny_bundle_template)
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(HubError, match=r"rejected the token \(HTTP 401\).*hf auth login"):
        download_bundle(REPO)


def test_download_errors_are_distinct(hub, cache_dir, tiny_bundle_template, monkeypatch):
    """Private without a token, missing repo, missing revision and gated repo each get their own message."""
    seed_bundle_repo(hub, tiny_bundle_template)
    seed_bundle_repo(hub, tiny_bundle_template, repo_id="alice/private", owner="alice", private=True)
    seed_bundle_repo(hub, tiny_bundle_template, repo_id="tsdpo-test/gated", gated=True)
    messages = {}
    for case, repo_id, revision, token in [
        ("private", "alice/private", None, None),
        ("missing repo", "tsdpo-test/nothing", None, TOKEN),
        ("missing revision", REPO, "v9", None),
        ("gated", "tsdpo-test/gated", None, None),
    ]:
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        else:
            monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(HubError) as caught:
            download_bundle(repo_id, revision)
        messages[case] = str(caught.value).replace(repo_id, "REPO")
    assert len(set(messages.values())) == 4, messages


def test_incomplete_cached_snapshot_offline(hub, cache_dir, tiny_bundle_template, monkeypatch):
    seed_bundle_repo(hub, tiny_bundle_template)
    path, _ = download_bundle(REPO)
    (path / "vectors" / "verbosity.safetensors").unlink()
    go_offline(monkeypatch)
    with pytest.raises(HubError, match=r"cached copy of tsdpo-test/bundle@main is incomplete.*download it again"):
        download_bundle(REPO)


def test_uncached_offline_names_the_fix(hub, cache_dir, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(HubError, match=r"not in the local cache.*unset HF_HUB_OFFLINE"):
        download_bundle(REPO, "v1")


def test_is_repo_id():
    assert is_repo_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert is_repo_id("owner/name.v2")
    for not_a_repo in ("gpt2", "a/b/c", "./bundle", "not a repo id!", "owner/", "/name", "owner//name"):
        assert not is_repo_id(not_a_repo), not_a_repo


# Publishing.


def test_push_creates_repo_and_uploads(hub, cache_dir, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    info = push_bundle(tiny_bundle, "alice/steer")

    assert hub.repos["alice/steer"].refs["main"] == info.oid
    assert info.commit_url == f"{hub.url}/alice/steer/commit/{info.oid}"
    uploaded = hub.files("alice/steer")
    local = folder_files(tiny_bundle)
    assert {name: uploaded[name] for name in local} == local
    assert "README.md" in local  # rendered from the manifest because the bundle had none

    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "tsdpo"
    assert card.data.license == "apache-2.0"
    assert "tsdpo" in card.data.tags
    assert card.data.tsdpo_pareto["grid_points"] == 9

    path, commit = download_bundle("alice/steer")
    assert commit == info.oid
    for objective in ("helpfulness", "verbosity"):
        remote = load_vector(path / "vectors" / f"{objective}.safetensors")
        original = load_vector(tiny_bundle / "vectors" / f"{objective}.safetensors")
        assert remote.metadata == original.metadata == {"objective": objective}
        assert all(torch.equal(remote.tensors[name], t) for name, t in original.tensors.items())


def test_push_to_branch_of_existing_repo(hub, cache_dir, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    first = push_bundle(tiny_bundle, "alice/steer")
    manifest = json.loads((tiny_bundle / "tsdpo.json").read_text())
    manifest["description"] = "second try"
    (tiny_bundle / "tsdpo.json").write_text(json.dumps(manifest))

    second = push_bundle(tiny_bundle, "alice/steer", branch="experiment", commit_message="try a branch")

    refs = hub.repos["alice/steer"].refs
    assert refs["main"] == first.oid
    assert refs["experiment"] == second.oid != first.oid
    assert json.loads(hub.files("alice/steer", "experiment")["tsdpo.json"])["description"] == "second try"
    _, commit = download_bundle("alice/steer", "experiment")
    assert commit == second.oid


def test_push_private_repo(hub, cache_dir, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push_bundle(tiny_bundle, "alice/secret", private=True)
    assert hub.repos["alice/secret"].private
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="private and no token was sent"):
        download_bundle("alice/secret")


def test_push_without_token(hub, tiny_bundle):
    with pytest.raises(HubError, match=r"needs a Hugging Face token.*`hf auth login` or set the HF_TOKEN"):
        push_bundle(tiny_bundle, "alice/steer")
    assert hub.requests == []


def test_push_to_foreign_namespace(hub, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubError, match=r"publishing to bob/steer failed: the token has no permission.*HTTP 403"):
        push_bundle(tiny_bundle, "bob/steer")


def test_push_checks_bundle_before_upload(hub, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubError, match="README.md not found; drop --keep-card"):
        push_bundle(tiny_bundle, "alice/steer", keep_card=True)
    (tiny_bundle / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
    with pytest.raises(HubError, match="README.md has invalid YAML metadata"):
        push_bundle(tiny_bundle, "alice/steer", keep_card=True)
    (tiny_bundle / "vectors" / "verbosity.safetensors").write_bytes(b"changed")
    with pytest.raises(BundleError, match="does not match the manifest"):
        push_bundle(tiny_bundle, "alice/steer")
    assert hub.requests == []


def test_push_renders_card_with_training_datasets(hub, tiny_bundle, monkeypatch):
    """The card is rendered from tsdpo.json and pareto.json, and lists the Hub datasets the vectors name."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (tiny_bundle / "README.md").write_text("---\nlicense: mit\n---\n# an older card without pareto figures\n")
    for index, objective in enumerate(("helpfulness", "verbosity")):
        path = tiny_bundle / "vectors" / f"{objective}.safetensors"
        data = {"helpfulness": "nvidia/HelpSteer (helpfulness, 39 pairs)",
                "verbosity": "local.jsonl (verbosity, 35 pairs)"}
        save_file(load_vector(path).tensors, str(path), metadata={"objective": objective, "data": data[objective]})
        rewrite_checksum(tiny_bundle, index)

    push_bundle(tiny_bundle, "alice/steer", title="Steerable tiny model")

    card = ModelCard(hub.files("alice/steer")["README.md"].decode())
    assert card.data.datasets == ["nvidia/HelpSteer"]
    assert card.data.license == "apache-2.0"
    assert card.data.tsdpo_pareto["grid_points"] == 9
    assert "# Steerable tiny model" in card.text

    push_bundle(tiny_bundle, "alice/kept", keep_card=True, datasets=["ignored/with-keep-card"])
    assert hub.files("alice/kept")["README.md"] == (tiny_bundle / "README.md").read_bytes()


def test_push_command_prints_commit(hub, tiny_bundle, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    parser = argparse.ArgumentParser(prog="tsdpo")
    add_push_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["push", str(tiny_bundle), "alice/cli", "--revision", "dev", "--private",
                              "--license", "mit", "--dataset", "nvidia/HelpSteer", "--dataset", "nvidia/HelpSteer2"])
    assert (args.branch, args.private, args.token, args.keep_card) == ("dev", True, None, False)

    args.func(args)

    sha = hub.repos["alice/cli"].refs["dev"]
    assert capsys.readouterr().out.splitlines() == [f"commit {sha}", f"{hub.url}/alice/cli/commit/{sha}"]
    card = ModelCard(hub.files("alice/cli", "dev")["README.md"].decode())
    assert (card.data.license, card.data.datasets) == ("mit", ["nvidia/HelpSteer", "nvidia/HelpSteer2"])


# The model card.


def test_model_card_metadata_parses(tiny_bundle, tmp_path):
    manifest = read_manifest(tiny_bundle)
    manifest.base_model = {"repo_id": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "main"}
    manifest.parameter_patterns = [r"^model\.layers\.(22|23)\."]
    pareto = json.loads((tiny_bundle / "pareto.json").read_text())
    card = model_card(manifest, pareto, title="Steer: ünïcode \"quotes\"", summary="A: summary # not a comment",
                      license="mit", datasets=["nvidia/HelpSteer"])
    (tmp_path / "README.md").write_text(card, encoding="utf-8")

    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["base_model"] == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert metadata["license"] == "mit"
    assert metadata["datasets"] == ["nvidia/HelpSteer"]
    assert metadata["tags"] == ["tsdpo", "dpo", "tangent-space", "steering", "multi-objective"]
    figures = metadata["tsdpo_pareto"]
    assert figures["hypervolume_ts_dpo"] == round(pareto["hypervolume"]["ts_dpo"], 4)
    assert figures["reference_point"] == pareto["hypervolume"]["reference"]
    assert len(figures["front"]) == len(pareto["front"])
    first = pareto["grid"][pareto["front"][0]]
    assert figures["front"][0]["weights"] == first["weights"]
    assert ModelCard(card).data.to_dict() == metadata
    assert r"`^model\.layers\.(22|23)\.`" in card


def test_model_card_without_hub_base_model(tiny_bundle):
    """An embedded base model or a local folder is not a Hub model, so base_model stays out of the metadata."""
    manifest = read_manifest(tiny_bundle)
    for base in ({"path": "base"}, {"repo_id": "models/tiny-instruct/"}, {"repo_id": "tiny-instruct"}):
        manifest.base_model = base
        metadata = ModelCard(model_card(manifest, None, title="t", summary="s")).data.to_dict()
        assert "base_model" not in metadata, base
        assert "tsdpo_pareto" not in metadata
        assert "datasets" not in metadata


# Integrity of vector files in a bundle.


def rewrite_checksum(bundle: Path, objective_index: int) -> None:
    """Record the current sha256 of a vector in the manifest, as if the file had been published that way."""
    manifest = json.loads((bundle / "tsdpo.json").read_text())
    entry = manifest["objectives"][objective_index]
    entry["sha256"] = sha256_file(bundle / entry["file"])
    (bundle / "tsdpo.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("keep", ["half", "few bytes"])
def test_truncated_vector_in_bundle(tiny_bundle, keep):
    path = tiny_bundle / "vectors" / "verbosity.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if keep == "half" else data[:5])

    with pytest.raises(BundleError, match="incomplete or was changed. Download the bundle again"):
        load_bundle(tiny_bundle)

    rewrite_checksum(tiny_bundle, 1)  # the checksum matches when the file was cut short before publishing
    with pytest.raises(VectorError, match="verbosity.safetensors: the vector file is incomplete or corrupt.*again"):
        load_bundle(tiny_bundle)


def test_pickle_is_never_loaded(tiny_bundle, tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    torch.save({"model.norm.weight": Payload()}, tiny_bundle / "vectors" / "verbosity.safetensors")
    rewrite_checksum(tiny_bundle, 1)
    with pytest.raises(VectorError, match="incomplete or corrupt"):
        load_bundle(tiny_bundle)

    torch.save({"model.norm.weight": Payload()}, tiny_bundle / "vectors" / "verbosity.bin")
    manifest = json.loads((tiny_bundle / "tsdpo.json").read_text())
    manifest["objectives"][1]["file"] = "vectors/verbosity.bin"
    (tiny_bundle / "tsdpo.json").write_text(json.dumps(manifest))
    rewrite_checksum(tiny_bundle, 1)
    with pytest.raises(VectorError, match="safetensors files only, never pickle"):
        load_bundle(tiny_bundle)
    assert not marker.exists()


def test_empty_vector_file_in_bundle(tiny_bundle):
    save_file({}, str(tiny_bundle / "vectors" / "verbosity.safetensors"), metadata={"objective": "verbosity"})
    rewrite_checksum(tiny_bundle, 1)
    with pytest.raises(VectorError, match="contains no tensors"):
        load_bundle(tiny_bundle)


def test_string_metadata_survives_bundle_round_trip(tiny_bundle):
    path = tiny_bundle / "vectors" / "helpfulness.safetensors"
    vector = load_vector(path)
    metadata = {"objective": "helpfulness", "beta": "0.1", "steps": "300", "data": "nvidia/HelpSteer (train)",
                "parameter_patterns": json.dumps([r"^model\.layers\.1\."]), "note": "ünïcode, \"quotes\"\nnewline"}
    save_file(vector.tensors, str(path), metadata=metadata)
    rewrite_checksum(tiny_bundle, 0)
    bundle = load_bundle(tiny_bundle)
    assert bundle.steerable.vectors["helpfulness"].metadata == metadata
    patterns = bundle.steerable.vectors["helpfulness"].metadata["parameter_patterns"]
    assert json.loads(patterns) == [r"^model\.layers\.1\."]


def test_copied_bundle_keeps_checksums(tiny_bundle, tmp_path):
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "copy"))
    assert load_bundle(copy).objectives == ("helpfulness", "verbosity")


# ZeroGPU.


def test_gpu_task_wraps_with_spaces_gpu(monkeypatch):
    calls = []

    def fake_gpu(fn=None, *, duration=None):
        if fn is None:
            return lambda function: fake_gpu(function, duration=duration)
        calls.append((fn.__name__, duration))
        return lambda *args: ("on gpu", fn(*args))

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))

    def generate(prompt):
        return prompt.upper()

    assert gpu_task(generate)("hi") == ("on gpu", "HI")
    assert gpu_task(duration=120)(generate)("hi") == ("on gpu", "HI")
    assert calls == [("generate", None), ("generate", 120)]


def test_gpu_task_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # makes `import spaces` raise ImportError

    def generate(prompt):
        return prompt

    assert gpu_task(generate) is generate
    assert gpu_task(duration=60)(generate) is generate
