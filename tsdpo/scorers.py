"""Built-in scorers that bundles can name in their manifest.

A bundle names its scorer by a registry key, never by an import path, so
loading a downloaded bundle never imports code that the bundle chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tsdpo.evaluate import Scorer


class WorldScorer:
    """Exact scorers of the synthetic demo world.

    Each evaluation example holds the world task under "task"; helpfulness
    comes from its ground truth and verbosity is the response length in words.
    """

    name = "tsdpo-world"
    description = "demo world: helpfulness in [0, 1] from the ground-truth answer; verbosity in words"

    def score(self, example: Mapping[str, Any], response: str) -> dict[str, float]:
        from tsdpo.world.scorers import score_helpfulness, score_verbosity
        from tsdpo.world.build import task_from_dict

        task = task_from_dict(example["task"])
        return {"helpfulness": score_helpfulness(task, response), "verbosity": score_verbosity(response)}


SCORERS: dict[str, Callable[[], Scorer]] = {WorldScorer.name: WorldScorer}


def get_scorer(name: str) -> Scorer:
    """Return a new instance of the scorer registered under `name`."""
    if name not in SCORERS:
        raise ValueError(f"scorer {name!r} is not built in; known scorers: {sorted(SCORERS)}")
    return SCORERS[name]()
