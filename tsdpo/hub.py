"""Bundles on the Hugging Face Hub: download with a pinned revision, resolve a bundle source."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from huggingface_hub import get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

logger = logging.getLogger(__name__)

# What a bundle needs: everything but training logs and other large extras.
BUNDLE_PATTERNS = ["tsdpo.json", "pareto.json", "README.md", "eval_set.jsonl", "vectors/*.safetensors", "base/*"]
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(RuntimeError):
    """A bundle could not be fetched from the Hub; the message says what to do."""


def is_repo_id(source: str) -> bool:
    """Return True for strings shaped like a Hub repo id, "owner/name"."""
    return bool(REPO_ID_PATTERN.match(source))


def download_bundle(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> tuple[Path, str]:
    """Fetch a bundle with `snapshot_download`; return its local folder and commit sha.

    `revision` is a branch, tag or full commit sha (default: main). With
    HF_HUB_OFFLINE=1 the bundle comes from the local cache.
    """
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=BUNDLE_PATTERNS, repo_type="model"
        )
    except GatedRepoError as err:
        raise HubError(
            f"{repo_id} is gated: accept its conditions on the Hub, then log in "
            f"(`hf auth login`) or set HF_TOKEN"
        ) from err
    except RepositoryNotFoundError as err:
        if get_token() is None:
            raise HubError(
                f"{repo_id} was not found. If it is private, log in (`hf auth login`) or set HF_TOKEN; "
                f"otherwise check the repo id"
            ) from err
        raise HubError(f"{repo_id} was not found, or your token cannot read it; check the repo id") from err
    except RevisionNotFoundError as err:
        raise HubError(
            f"{repo_id} has no revision {revision!r}; pass an existing branch, tag or full commit sha"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = "unset HF_HUB_OFFLINE or download it once while online" if offline else "check your network connection"
        raise HubError(f"{repo_id}@{revision or 'main'} is not in the local cache and the Hub cannot be reached: {hint}") from err

    path = Path(folder)
    commit = path.name  # snapshot folders are named by the full commit sha
    logger.info("loaded bundle %s at commit %s", repo_id, commit)
    return path, commit


def resolve_bundle_source(source: str, revision: str | None = None) -> tuple[Path, str | None]:
    """Turn a bundle source (local folder or Hub repo id) into a local folder and a commit sha.

    A source that exists on disk is a local folder. Otherwise a source shaped
    like "owner/name" is a Hub repo id. Anything else is an error.
    """
    path = Path(source).expanduser()
    if path.exists():
        if revision:
            logger.warning("ignoring revision %r: %s is a local folder", revision, source)
        return path, None
    if is_repo_id(source):
        return download_bundle(source, revision)
    raise HubError(f"bundle {source!r} not found: it is neither an existing folder nor a Hub repo id of the form owner/name")
