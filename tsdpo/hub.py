"""Bundles on the Hugging Face Hub: download at a pinned revision, resolve a bundle source, publish.

Downloads go through `snapshot_download`, so they share huggingface_hub's cache
and work offline (HF_HUB_OFFLINE=1) once a revision is cached. Publishing
creates the repo if needed and uploads the bundle folder with `HfApi.upload_folder`.
Every Hub failure becomes a HubError whose message names the next step.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml
from huggingface_hub import HfApi, ModelCard, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)
from huggingface_hub.utils import validate_repo_id

logger = logging.getLogger(__name__)

# Files a bundle download fetches: everything but training logs and other large extras.
BUNDLE_PATTERNS = ["tsdpo.json", "pareto.json", "README.md", "eval_set.jsonl", "vectors/*.safetensors", "base/*"]
LOGIN_HINT = "run `hf auth login` or set the HF_TOKEN environment variable"


class HubError(RuntimeError):
    """A Hub request failed. The message names the failed request and the next step."""


def is_repo_id(source: str) -> bool:
    """Return True for strings shaped like a Hub repo id, "owner/name"."""
    if source.count("/") != 1:
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def describe_download_error(
    err: Exception, repo_id: str, revision: str | None, token: str | None = None
) -> HubError:
    """Turn an error of snapshot_download or resolve_revision into a HubError that names the fix.

    `token` is the token passed to the request, if any; otherwise HF_TOKEN or
    the stored login was sent. The Hub answers 401 for a missing repo and for
    a private one alike when the request carries no token, so without a token
    the two cases share a message.
    """
    where = f"{repo_id}@{revision or 'main'}"
    if isinstance(err, GatedRepoError):
        return HubError(
            f"{repo_id} is a gated repo: accept its conditions at {constants.ENDPOINT}/{repo_id}, "
            f"then {LOGIN_HINT} with a token of the account that accepted them"
        )
    if isinstance(err, RepositoryNotFoundError):
        if (token or get_token()) is None:
            return HubError(
                f"{repo_id} was not found on the Hub, or it is private and no token was sent. "
                f"Check the repo id; for a private repo, {LOGIN_HINT}"
            )
        return HubError(
            f"{repo_id} was not found on the Hub, or your token's account has no read access to it. "
            f"Check the repo id and the token (`hf auth whoami`)"
        )
    if isinstance(err, RevisionNotFoundError):
        return HubError(
            f"{repo_id} has no revision {revision!r}; pass an existing branch, tag or full 40-character commit sha"
        )
    if isinstance(err, IncompleteSnapshotError):
        return HubError(
            f"the cached copy of {where} is incomplete ({err}); download it again with network access "
            f"(HF_HUB_OFFLINE unset)"
        )
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, RevisionResolutionError)):
        if constants.is_offline_mode():
            hint = "unset HF_HUB_OFFLINE, or download it once while online"
        else:
            hint = "check your network connection and HF_ENDPOINT"
        return HubError(f"{where} is not in the local cache and the Hub cannot be reached: {hint}")
    if isinstance(err, HfHubHTTPError):
        return describe_http_error(err, f"reading {where}")
    return HubError(f"reading {where} failed: {err}")


def describe_http_error(err: HfHubHTTPError, action: str) -> HubError:
    """Turn an HTTP error without a more specific class into a HubError naming the status code."""
    status = err.response.status_code if err.response is not None else None
    server_message = err.server_message or str(err).splitlines()[0]
    if status == 401:
        return HubError(f"{action} failed: the Hub rejected the token (HTTP 401). Log in again: {LOGIN_HINT}")
    if status == 403:
        return HubError(
            f"{action} failed: the token has no permission for this (HTTP 403: {server_message}). "
            f"Use a token with write access to the namespace (https://huggingface.co/settings/tokens)"
        )
    return HubError(f"{action} failed with HTTP {status}: {server_message}. Try again later")


def download_bundle(
    repo_id: str, revision: str | None = None, cache_dir: str | None = None, token: str | None = None
) -> tuple[Path, str]:
    """Fetch a bundle with `snapshot_download`; return its local folder and commit sha.

    `revision` is a branch, tag or full commit sha (default: main). With
    HF_HUB_OFFLINE=1 the bundle comes from the local cache, where a branch or
    tag resolves to the commit it pointed to when it was last downloaded.
    """
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=BUNDLE_PATTERNS, repo_type="model",
            token=token,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise describe_download_error(err, repo_id, revision, token) from err

    path = Path(folder)
    commit = path.name  # snapshot folders of the cache are named by the full commit sha
    logger.info("loaded bundle %s at revision %s, commit %s", repo_id, revision or "main", commit)
    return path, commit


def resolve_bundle_source(source: str, revision: str | None = None) -> tuple[Path, str | None]:
    """Turn a bundle source (local folder or Hub repo id) into a local folder and a commit sha.

    A source that exists on disk is a local folder, and its commit is None.
    Otherwise a source shaped like "owner/name" is a Hub repo id. Anything
    else is an error.
    """
    path = Path(source).expanduser()
    if path.exists():
        if revision:
            logger.warning("ignoring revision %r: %s is a local folder", revision, source)
        return path, None
    if is_repo_id(source):
        return download_bundle(source, revision)
    raise HubError(f"bundle {source!r} not found: it is neither an existing folder nor a Hub repo id of the form owner/name")


def require_token(token: str | None = None) -> str:
    """Return `token`, else HF_TOKEN or the stored login; raise HubError when there is none."""
    token = token or get_token()
    if not token:
        raise HubError(f"publishing needs a Hugging Face token with write access: {LOGIN_HINT}")
    return token


def push_bundle(
    folder: str | Path,
    repo_id: str,
    branch: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    keep_card: bool = False,
    title: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
):
    """Upload a bundle folder to a Hub model repo and return the CommitInfo of the new commit.

    Checks the manifest and every vector checksum first. Then writes README.md
    from the manifest and pareto.json (see tsdpo.card), unless `keep_card`
    keeps the folder's own README.md, and validates its YAML metadata. Creates
    the repo (private when `private`) and `branch` if they do not exist.
    `datasets` default to the Hub dataset ids named in the vectors' "data" metadata.
    """
    from tsdpo.bundle import read_manifest, verify_checksums

    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_checksums(folder, manifest)
    readme = folder / "README.md"
    if keep_card:
        if not readme.is_file():
            raise HubError(f"{readme} not found; drop --keep-card to render the model card from the manifest")
    else:
        if datasets is None:
            datasets = training_datasets(folder, manifest)
        render_model_card(folder, title or repo_id.split("/")[-1], license=license, datasets=datasets)
    validate_model_card(readme)
    token = require_token(token)
    api = HfApi(token=token)  # built here so that it reads the current HF_ENDPOINT
    message = commit_message or f"Upload TS-DPO bundle ({', '.join(o.name for o in manifest.objectives)})"

    try:
        repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if private and not api.repo_info(repo_id).private:
            logger.warning(
                "%s already exists and is public; --private does not change an existing repo. "
                "Change its visibility in the repo settings.", repo_id,
            )
        if branch and branch != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", revision=branch, commit_message=message
        )
    except ValueError as err:  # raised by upload_folder when the Hub rejects the README metadata
        raise HubError(f"the Hub rejected the metadata of {readme}: {err}") from err
    except HfHubHTTPError as err:
        raise describe_http_error(err, f"publishing to {repo_id}") from err

    logger.info("pushed %s to %s (branch %s), commit %s", folder, repo_url, branch or "main", info.oid)
    return info


def validate_model_card(readme: Path) -> None:
    """Raise HubError unless `readme` has YAML metadata that huggingface_hub.ModelCard parses."""
    try:
        ModelCard(readme.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as err:  # ValueError: the metadata block is not a mapping
        raise HubError(f"{readme} has invalid YAML metadata ({err}); fix it, or push without --keep-card") from err


def training_datasets(folder: Path, manifest) -> list[str]:
    """Return the Hub dataset ids that the vectors were trained on, read from their "data" metadata.

    `python -m tsdpo train` writes "data" as "<source> (<objective>, <n> pairs)".
    A source shaped like owner/name that is not a local path counts as a Hub dataset.
    """
    from safetensors import safe_open

    found = []
    for entry in manifest.objectives:
        with safe_open(str(folder / entry.file), framework="pt") as handle:
            source = ((handle.metadata() or {}).get("data") or "").split(" ")[0]
        if source and is_repo_id(source) and not Path(source).exists() and source not in found:
            found.append(source)
    return found


def render_model_card(folder: Path, title: str, license: str = "apache-2.0", datasets: list[str] | None = None) -> Path:
    """Write README.md for a bundle folder from its manifest and pareto.json."""
    from tsdpo.bundle import PARETO_NAME, read_manifest
    from tsdpo.card import model_card

    manifest = read_manifest(folder)
    pareto_path = folder / PARETO_NAME
    pareto = json.loads(pareto_path.read_text()) if pareto_path.is_file() else None
    summary = manifest.description or "Tangent vectors trained with TS-DPO, one per preference objective."
    readme = folder / "README.md"
    card = model_card(manifest, pareto, title=title, summary=summary, license=license, datasets=datasets or ())
    readme.write_text(card, encoding="utf-8")
    logger.info("wrote the model card %s", readme)
    return readme


def cmd_push(args: argparse.Namespace) -> None:
    info = push_bundle(
        args.bundle, args.repo_id, branch=args.branch, private=args.private, token=args.token,
        commit_message=args.message, keep_card=args.keep_card, title=args.title, license=args.license,
        datasets=args.dataset or None,
    )
    print(f"commit {info.oid}")
    print(info.commit_url)


def add_push_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `push BUNDLE REPO_ID` to the tsdpo command line."""
    parser = subparsers.add_parser(
        "push", help="upload a bundle folder to a Hugging Face model repo",
        description=f"Upload a bundle folder to a Hub model repo, creating the repo if needed. "
        f"Authentication: --token, else HF_TOKEN, else the stored login; to log in, {LOGIN_HINT}.",
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (contains tsdpo.json)")
    parser.add_argument("repo_id", help="target model repo, owner/name")
    parser.add_argument("--branch", "--revision", dest="branch", default=None,
                        help="branch to commit to, created from main if missing (default: main)")
    parser.add_argument("--private", action="store_true",
                        help="create the repo as private (an existing repo keeps its visibility)")
    parser.add_argument("--token", default=None,
                        help="Hub token with write access; prefer HF_TOKEN or `hf auth login`, "
                             "which keep it out of the shell history")
    parser.add_argument("--message", default=None,
                        help="commit message (default: 'Upload TS-DPO bundle (<objectives>)')")
    parser.add_argument("--keep-card", action="store_true",
                        help="upload the bundle's own README.md instead of rendering it from tsdpo.json "
                             "and pareto.json")
    parser.add_argument("--title", default=None, help="model card title (default: the repo name)")
    parser.add_argument("--license", default="apache-2.0", help="license id for the card metadata (default apache-2.0)")
    parser.add_argument("--dataset", action="append", default=[], metavar="DATASET_ID",
                        help="Hub dataset id for the card metadata; repeat per dataset "
                             "(default: the datasets named in the vectors' metadata)")
    parser.set_defaults(func=cmd_push)
    return parser
