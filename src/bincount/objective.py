"""The metric a run optimises and its direction, set once in conf/train.yaml (``optimized_metric``,
``optimized_mode``) and read by checkpointing (``callbacks.model_checkpoint.mode``), the sweepers
(Optuna's ``direction``, SageMaker's tuner objective) and sweep summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bincount.errors import BincountError

MODES = ("max", "min")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BincountError(
            f"optimized_mode: {mode!r} is neither max nor min (max for accuracy, min for a loss or error)"
        )
    return mode


def direction(mode: str) -> str:
    """``max`` -> ``maximize`` (Optuna's word; SageMaker's is the capitalised form)."""
    return "maximize" if check_mode(mode) == "max" else "minimize"


def best_of(mode: str) -> Callable[[Sequence], object]:
    return max if check_mode(mode) == "max" else min
