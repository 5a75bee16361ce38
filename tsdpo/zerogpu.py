"""ZeroGPU support: run GPU work inside `spaces.GPU` on Hugging Face Spaces, unchanged elsewhere.

On ZeroGPU hardware a Space gets a GPU only while a function decorated with
`spaces.GPU` runs. The `spaces` package is installed on Spaces. Where it is
missing, `gpu_task` returns the function as it is, so the app runs the same on
a laptop or a dedicated GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)


def gpu_task(fn: F | None = None, *, duration: int | None = None) -> F | Callable[[F], F]:
    """Wrap `fn` in `spaces.GPU` when the `spaces` package imports; return it unchanged otherwise.

    Use it bare (`gpu_task(generate)`) or with the GPU time limit in seconds
    that ZeroGPU reserves per call (`gpu_task(duration=120)(generate)`).
    """
    if fn is None:
        return lambda function: gpu_task(function, duration=duration)
    try:
        import spaces
    except ImportError:
        return fn
    logger.info("running %s inside spaces.GPU", getattr(fn, "__name__", fn))
    if duration is None:
        return spaces.GPU(fn)
    return spaces.GPU(duration=duration)(fn)
