"""A wall-clock budget for a whole run: as many epochs as fit, with the cosine schedule fitted to them.

A recipe's epoch count is set on one machine; on a CPU without native bf16 the same epochs take ~3x longer
(README "How good is it"). Stopping at the deadline would cut the cosine schedule off at a high learning
rate, the worst point of a run ("Budgeted Training", Li et al. 2020: a schedule that decays to zero within
the budget beats one truncated by it). So after the first epoch this callback measures how long an epoch
and the evaluation after fitting take, picks the number of epochs that fits, and shortens the cosine
schedule to end there.
"""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import psutil
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.lr_scheduler import CosineAnnealingLR

from bincount.errors import BincountError
from bincount.model.views import TTA_VIEWS

log = logging.getLogger(__name__)

# The first budget of a command counts from the process's start (imports and config included); a later one (the
# next trial of a Hydra multirun) or one in a long-lived process (a notebook, a test session) from its creation.
_process_budget_taken = False
SLOW_EPOCH = 1.1  # the epochs planned take this times the first one's time
STARTUP_S = 120.0  # a process older than this when the budget is created is not a command starting up


class TimeBudget(L.Callback):
    """Fit within ``minutes`` of wall-clock time, counted from the command's start (see ``STARTUP_S``),
    the image check and the evaluation after fit included: after epoch 0, ``max_epochs`` drops to the epochs that fit (never below 1, never above the
    configured count) and a cosine schedule (``CosineAnnealingLR`` with ``T_max`` = ``max_epochs``, stepped
    per epoch) is refitted to end at the new last epoch. A later epoch that finds the run behind its plan
    (a slower machine, a busy core) stops fitting there.

    ``warmup_batches``: training steps of epoch 0 not timed (the first ones are slow). ``margin_s``: seconds
    kept for what the estimate leaves out (writing plots and metrics, loading the best checkpoint)."""

    def __init__(self, minutes: float, warmup_batches: int = 10, margin_s: float = 30.0):
        if not minutes or minutes <= 0:
            raise BincountError(f"callbacks.time_budget.minutes: must be a positive number of minutes, got {minutes!r}")
        global _process_budget_taken
        self.minutes, self.warmup_batches, self.margin_s = float(minutes), int(warmup_batches), float(margin_s)
        now, born = time.time(), psutil.Process().create_time()
        self.start = born if not _process_budget_taken and now - born < STARTUP_S else now
        _process_budget_taken = True
        self.epochs: int | None = None  # the epochs this run trains, decided after epoch 0
        self.cut_to: int | None = None  # the same where fewer than configured: kept in checkpoints for a resume
        self.active = False
        self._timed: list[float] = []
        self._val_started: float | None = None
        # what epoch 0 measured: seconds per epoch, seconds of evaluation after fit, seconds from start to the decision
        self.plan: dict[str, float] | None = None

    @property
    def deadline(self) -> float:
        return self.start + 60.0 * self.minutes

    def state_dict(self) -> dict:
        return {"cut_to": self.cut_to}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cut_to = state_dict.get("cut_to")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = False
        if trainer.fast_dev_run:  # a few batches to try the code: nothing to budget
            return
        if trainer.current_epoch > 0:  # resumed: the budget was the first process's; its cut (if any) holds
            if self.cut_to is not None:
                trainer.fit_loop.max_epochs = self.cut_to
                log.info("time budget: the resumed run keeps the %d epochs its budget chose", self.cut_to)
            return
        for config in trainer.lr_scheduler_configs:
            s = config.scheduler
            if not isinstance(s, CosineAnnealingLR) or config.interval != "epoch":
                raise BincountError(
                    f"callbacks.time_budget: the budget refits a per-epoch CosineAnnealingLR, not "
                    f"{type(s).__name__} (interval {config.interval}); drop callbacks.time_budget or use "
                    "model.scheduler=CosineAnnealingLR with T_max=${trainer.max_epochs}"
                )
            if s.T_max != trainer.max_epochs:
                raise BincountError(
                    f"callbacks.time_budget: the cosine schedule's T_max ({s.T_max}) must equal trainer.max_epochs "
                    f"({trainer.max_epochs}) for the budget to refit it"
                )
        self.active = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.active and trainer.current_epoch == 0:
            self._timed.append(time.time())

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._val_started = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        now = time.time()
        if self.epochs is None:
            self._decide(trainer, pl_module, now)
        elif self.plan is not None and trainer.current_epoch + 1 < trainer.fit_loop.max_epochs:
            # the margin absorbs jitter
            late = now + self.plan["per_epoch_s"] + self.plan["after_fit_s"] > self.deadline
            if trainer.strategy.broadcast(late, src=0):
                log.warning(
                    "time budget: epoch %d ends later than planned (%.0f of %.0f min used); stopping here to "
                    "leave time for calibration and the test",
                    trainer.current_epoch + 1,
                    (now - self.start) / 60,
                    self.minutes,
                )
                trainer.should_stop = True

    def _decide(self, trainer: L.Trainer, pl_module: L.LightningModule, now: float) -> None:
        val_s = now - self._val_started
        stamps = self._timed[self.warmup_batches :] if len(self._timed) > self.warmup_batches + 2 else self._timed
        per_batch = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1) if len(stamps) > 1 else 0.0
        per_epoch = per_batch * trainer.num_training_batches + val_s
        splits = getattr(trainer.datamodule, "splits", None) or {}
        n_val, n_test = len(splits.get("val", [])), len(splits.get("test", []))
        views = len(TTA_VIEWS.get(pl_module.hparams.get("tta", "none"), (None,)))
        # calibration (every validation image in every view) and the test (every test image in every view)
        after_fit = val_s * views * (1.0 + (n_test / n_val if n_val else 1.0))
        left = self.deadline - now - after_fit - self.margin_s
        configured = trainer.max_epochs
        # epochs on a shared 2-core VM vary by +-10 % around the first (52-68 s on the quick start): plan on slow ones
        planned = per_epoch * SLOW_EPOCH
        epochs = min(configured, max(1, 1 + math.floor(left / planned))) if planned > 0 else configured
        epochs = int(trainer.strategy.broadcast(epochs, src=0))
        self.epochs = epochs
        self.plan = {"per_epoch_s": per_epoch, "after_fit_s": after_fit, "decided_s": now - self.start}
        if epochs >= configured:
            log.info(
                "time budget: %d epochs of %.0f s and %.0f s of evaluation fit %.0f min",
                configured,
                per_epoch,
                after_fit,
                self.minutes,
            )
            return
        trainer.fit_loop.max_epochs = self.cut_to = epochs
        for config in trainer.lr_scheduler_configs:
            self._refit_cosine(config.scheduler, epochs)
        log.info(
            "time budget: %.0f min fit %d of the %d epochs (%.0f s each, %.0f s of evaluation after); "
            "the cosine schedule now ends at epoch %d",
            self.minutes,
            epochs,
            configured,
            per_epoch,
            after_fit,
            epochs,
        )

    @staticmethod
    def _refit_cosine(scheduler: CosineAnnealingLR, epochs: int) -> None:
        """``T_max`` = ``epochs``, and every group's learning rate set to the schedule's closed form at the step
        it has taken (one, at the end of epoch 0), from which its recursive updates go on."""
        scheduler.T_max = epochs
        step = scheduler.last_epoch
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * step / epochs)) / 2
