"""Hydra callbacks of a multirun (conf/hydra/default.yaml): the sweep summary when the sweep ends, and one
W&B run per trial."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.layout import SWEEP_SUMMARY
from bincount.objective import direction
from bincount.sweeps import summarize_sweep

log = logging.getLogger(__name__)


def check_sweeper_direction(config: DictConfig) -> None:
    """The sweeper must optimise the way checkpointing does: both follow ``optimized_mode``."""
    wanted = direction(config.optimized_mode)
    given = config.hydra.sweeper.get("direction")
    if given is not None and str(given).lower() != wanted:
        raise BincountError(
            f"hydra.sweeper.direction={given} disagrees with optimized_mode={config.optimized_mode}; "
            "set optimized_mode (checkpointing, sweepers and summaries all follow it)"
        )


class SweepSummary(Callback):
    """Writes the sweep summary when a multirun ends (any sweeper)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_sweeper_direction(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not any(p.is_dir() and p.name.isdigit() for p in sweep_dir.iterdir()):
            return  # no local trials: a SageMaker tuning job writes its own summary when it ends
        declared = list((config.hydra.sweeper.get("params") or {}).keys())
        summary = summarize_sweep(sweep_dir, config.optimized_metric, config.optimized_mode, declared)
        best = summary["best"]
        if best:
            log.info(
                "sweep: best trial %d, %s = %.4f, %s -> %s",
                best["trial"],
                summary["metric"],
                best["value"],
                best["params"],
                sweep_dir / f"{SWEEP_SUMMARY}.md",
            )
        else:
            log.warning("sweep: no trial completed; see %s", sweep_dir)


class FinishTrackingRuns(Callback):
    """Ends a job's W&B run when the job ends. A local sweep runs its trials in one process, and
    Lightning's WandbLogger would log the next trial into the run that is still open."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()
