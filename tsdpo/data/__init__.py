"""Preference data: loaders for JSONL, Parquet, HelpSteer, UltraFeedback and `datasets` sources, and splits.

Tokenization lives in tsdpo.data.tokenize, which needs torch; this package
itself imports only the standard library.
"""

from tsdpo.data.load import DataConfig, load_pair_split, load_pairs
from tsdpo.data.pairs import PreferencePair
from tsdpo.data.splits import PairSplit, split_by_prompt
from tsdpo.data.verbosity import LengthRule

__all__ = [
    "DataConfig",
    "LengthRule",
    "PairSplit",
    "PreferencePair",
    "load_pair_split",
    "load_pairs",
    "split_by_prompt",
]
