"""Read rows (one dict per example) from JSONL, Parquet or any `datasets` source."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Row = dict[str, Any]

# `datasets` builders for local files, by suffix.
_DATASETS_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def read_jsonl(path: str | Path) -> list[Row]:
    """Read a JSON Lines file: one JSON object per line, blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"JSONL file {path} not found; check the path")

    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number} is not valid JSON ({err.msg}); fix or remove that line") from err
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{line_number} is a JSON {type(row).__name__}; each line must be an object "
                    f'such as {{"prompt": ..., "chosen": ..., "rejected": ...}}'
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"JSONL file {path} contains no rows; it is empty or has only blank lines")
    return rows


def read_parquet(path: str | Path) -> list[Row]:
    """Read a Parquet file into rows; nested columns (message lists) become lists of dicts."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Parquet file {path} not found; check the path")
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow; install it with `pip install pyarrow`") from err

    rows = pq.read_table(path).to_pylist()
    if not rows:
        raise ValueError(f"Parquet file {path} contains no rows")
    return rows


def read_dataset(source: str, split: str | None = None, cache_dir: str | Path | None = None) -> list[Row]:
    """Read one split of anything `datasets.load_dataset` can load.

    `source` is a local file (.json, .jsonl, .parquet, .csv), a local dataset
    folder, or a dataset name on the Hugging Face Hub such as
    "nvidia/HelpSteer". `split` accepts the `datasets` slicing syntax, e.g.
    "train[:1000]"; None reads "train". A local file is loaded with the builder
    for its suffix, and its rows land in the "train" split.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"loading {source!r} needs the datasets library; install it with `pip install datasets`") from err

    split = split or "train"
    path = Path(source)
    if path.is_file():
        builder = _DATASETS_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{source} has suffix {path.suffix!r}, which datasets cannot read as a single file; "
                f"use one of {sorted(_DATASETS_BUILDERS)} or pass the dataset folder"
            )
        dataset = datasets.load_dataset(builder, data_files=str(path), split=split, cache_dir=cache_dir)
    else:
        logger.info("loading split %r of %s with datasets.load_dataset", split, source)
        dataset = datasets.load_dataset(source, split=split, cache_dir=cache_dir)

    rows = dataset.to_list()
    if not rows:
        raise ValueError(f"split {split!r} of {source} contains no rows")
    return rows


def require_row_columns(rows: Sequence[Row], columns: Sequence[str], source: str, layout: str) -> None:
    """Raise ValueError naming the first row that lacks one of `columns`."""
    for index, row in enumerate(rows):
        missing = [column for column in columns if column not in row]
        if missing:
            raise ValueError(
                f"{source}: row {index} has no column {missing[0]!r} (columns: {sorted(row)}); "
                f"{layout} rows need {list(columns)}"
            )
