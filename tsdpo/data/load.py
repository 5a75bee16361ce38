"""One entry point from a data source and an objective to preference pairs.

`load_pairs` reads rows, recognizes their layout and builds the pairs for one
objective. `load_pair_split` adds the seeded train/eval split by prompt.

Objectives by layout:

- HelpSteer rows (prompt, response, ratings): any of HELPSTEER_ATTRIBUTES,
  pairs by that rating ("verbosity" uses the verbosity rating), or "length"
  for pairs by word count with helpfulness held within the gap.
- Pair rows (prompt, chosen, rejected, and scores in UltraFeedback):
  "preference" or its alias "helpfulness" keeps the dataset's own label, and
  "verbosity" or "length" re-pairs the two completions by word count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tsdpo.data.helpsteer import HELPSTEER_ATTRIBUTES, helpsteer_length_pairs, helpsteer_rating_pairs
from tsdpo.data.pairs import PreferencePair
from tsdpo.data.pairwise import labelled_pairs, pairwise_length_pairs
from tsdpo.data.readers import Row, read_dataset, read_jsonl, read_parquet
from tsdpo.data.splits import PairSplit, split_by_prompt
from tsdpo.data.verbosity import LengthRule

logger = logging.getLogger(__name__)

Format = Literal["auto", "jsonl", "parquet", "hf", "helpsteer", "ultrafeedback"]
FORMATS = ("auto", "jsonl", "parquet", "hf", "helpsteer", "ultrafeedback")
Layout = Literal["helpsteer", "pairwise"]

LABEL_OBJECTIVES = ("preference", "helpfulness")
LENGTH_OBJECTIVES = ("verbosity", "length")
HELPSTEER_OBJECTIVES = (*HELPSTEER_ATTRIBUTES, "length")
PAIRWISE_OBJECTIVES = (*LABEL_OBJECTIVES, *LENGTH_OBJECTIVES)


def read_rows(
    source: str | Path, format: Format = "auto", split: str | None = None, cache_dir: str | Path | None = None
) -> list[Row]:
    """Read rows with the reader that `format` names: "jsonl", "parquet" or "hf".

    For the other formats the suffix picks the reader: a path ending in .jsonl
    or .parquet is read directly, and anything else goes through
    `datasets.load_dataset`. `split` applies only to the `datasets` route.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {list(FORMATS)}")
    source = str(source)
    if format in ("jsonl", "parquet", "hf"):
        reader = format
    else:
        suffix = Path(source).suffix.lower()
        reader = {".jsonl": "jsonl", ".parquet": "parquet"}.get(suffix, "hf")

    if reader == "hf":
        return read_dataset(source, split, cache_dir)
    if split is not None:
        raise ValueError(
            f"split={split!r} applies to sources read with datasets, but {source} is read as a single "
            f"{reader} file; leave split unset, or pass format='hf' to use datasets' split slicing"
        )
    return read_jsonl(source) if reader == "jsonl" else read_parquet(source)


def detect_layout(rows: list[Row], source: str) -> Layout:
    """Recognize HelpSteer rows or pair rows from the columns of the first row."""
    columns = set(rows[0])
    if {"chosen", "rejected"} <= columns:
        return "pairwise"
    if "response" in columns and columns & set(HELPSTEER_ATTRIBUTES):
        return "helpsteer"
    raise ValueError(
        f"{source}: cannot recognize the layout from columns {sorted(columns)}; expected prompt/chosen/rejected "
        f"(preference pairs) or prompt/response with ratings such as {list(HELPSTEER_ATTRIBUTES)} (HelpSteer)"
    )


def pairs_from_rows(
    rows: list[Row],
    layout: Layout,
    objective: str,
    source: str = "rows",
    length_rule: LengthRule = LengthRule(),
    require_scores: bool = False,
) -> list[PreferencePair]:
    """Build the pairs of one objective from rows of a known layout."""
    if layout == "helpsteer":
        if objective == "length":
            return helpsteer_length_pairs(rows, length_rule, source)
        if objective in HELPSTEER_ATTRIBUTES:
            return helpsteer_rating_pairs(rows, objective, source)
        raise ValueError(f"unknown objective {objective!r} for HelpSteer rows in {source}; choose one of {list(HELPSTEER_OBJECTIVES)}")

    if objective in LENGTH_OBJECTIVES:
        return pairwise_length_pairs(rows, length_rule, source)
    if objective in LABEL_OBJECTIVES:
        return labelled_pairs(rows, source, require_scores=require_scores)
    raise ValueError(
        f"unknown objective {objective!r} for preference-pair rows in {source}; choose one of "
        f"{list(PAIRWISE_OBJECTIVES)} (per-attribute objectives need HelpSteer-style ratings)"
    )


def load_pairs(
    source: str | Path,
    format: Format = "auto",
    objective: str = "helpfulness",
    split: str | None = None,
    limit: int | None = None,
    length_rule: LengthRule = LengthRule(),
    cache_dir: str | Path | None = None,
) -> list[PreferencePair]:
    """Load the preference pairs of one objective from a file or a `datasets` source.

    format: "jsonl" or "parquet" reads that file, and "hf" reads `source` (a
    file, folder or Hub dataset name) with `datasets.load_dataset`. These three
    and "auto" recognize the layout from the columns. "helpsteer" and
    "ultrafeedback" fix the layout, and "ultrafeedback" requires scores on
    every row. "auto" picks the reader by suffix: .jsonl and .parquet are read
    directly and anything else goes through `datasets`.
    split: the `datasets` split, "train" when None; only for that route.
    limit: keep at most this many pairs, the first ones in the source's order.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {list(FORMATS)}")
    if objective not in (*HELPSTEER_OBJECTIVES, *PAIRWISE_OBJECTIVES):
        raise ValueError(
            f"unknown objective {objective!r}; choose one of {list(HELPSTEER_OBJECTIVES)} for HelpSteer data "
            f"or {list(PAIRWISE_OBJECTIVES)} for preference-pair data"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be at least 1, or None for all pairs")

    source = str(source)
    rows = read_rows(source, format, split, cache_dir)
    layout: Layout
    if format == "helpsteer":
        layout = "helpsteer"
    elif format == "ultrafeedback":
        layout = "pairwise"
    else:
        layout = detect_layout(rows, source)

    pairs = pairs_from_rows(rows, layout, objective, source, length_rule, require_scores=format == "ultrafeedback")
    if not pairs:
        raise ValueError(f"{source} gave no {objective} pairs from {len(rows)} rows; check the objective and the data")
    return pairs[:limit]


@dataclass
class DataConfig:
    """Settings of a preference-data source: what to read, which objective, and the train/eval split."""

    source: str  # a .jsonl or .parquet file, a datasets file or folder, or a Hub dataset name
    format: Format = "auto"
    objective: str = "helpfulness"
    split: str | None = None  # datasets split, e.g. "train[:2000]"; None reads "train"
    limit: int | None = None  # pairs kept before the train/eval split; None keeps all
    eval_size: float | int = 0.1  # float: fraction of prompts held out; int: number of prompts
    seed: int = 0  # seed of the prompt shuffle behind the train/eval split
    length_rule: LengthRule = field(default_factory=LengthRule)
    cache_dir: str | None = None  # datasets cache; None uses the datasets default

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {list(FORMATS)}")


def load_pair_split(config: DataConfig) -> PairSplit:
    """Load the pairs that `config` describes and split them by prompt."""
    pairs = load_pairs(
        config.source, config.format, config.objective, config.split, config.limit, config.length_rule, config.cache_dir
    )
    split = split_by_prompt(pairs, config.eval_size, config.seed)
    logger.info(
        "%s %s: %d train pairs, %d eval pairs on %d held-out prompts",
        config.source, config.objective, len(split.train), len(split.eval), len(split.eval_prompts),
    )
    return split
