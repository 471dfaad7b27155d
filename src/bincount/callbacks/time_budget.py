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
from bincount.model.schedules import refit_cosine
from bincount.model.views import TTA_VIEWS

log = logging.getLogger(__name__)

# The first budget of a command counts from the process's start (imports and config included); a later one (the
# next trial of a Hydra multirun) or one in a long-lived process (a notebook, a test session) from its creation.
_process_budget_taken = False
SLOW_EPOCH = 1.1  # planned after epoch 0: the epochs take this times its time (they vary +-10 % on a shared VM)
REPLAN_SLACK = 1.05  # planned after later epochs: this times the mean epoch so far
STARTUP_S = 120.0  # a process older than this when the budget is created is not a command starting up
# a later plan lengthens the schedule only with this share of an epoch to spare: with epochs of varying length, a
# plan on the edge flipped 15 -> 16 -> 17 -> 16 epochs (AMD EPYC, stop 27), each flip moving the learning rate
LENGTHEN_SPARE = 0.5


def epochs_that_fit(done: int, configured: int, planned: int, left_s: float, epoch_s: float) -> int:
    """The epochs to train in all: ``done`` so far and as many more of ``epoch_s`` seconds as fit in ``left_s``,
    never fewer than ``done``, never more than ``configured``. More than ``planned`` (the plan in force) only
    where ``LENGTHEN_SPARE`` of an epoch is left over, so a plan near the edge does not go back and forth."""
    if epoch_s <= 0:
        return configured
    spare = left_s / epoch_s
    fits = done + math.floor(spare)
    if fits > planned:
        fits = max(planned, done + math.floor(spare - LENGTHEN_SPARE))
    return min(configured, max(done, fits))


class TimeBudget(L.Callback):
    """Fit within ``minutes`` of wall-clock time, counted from the command's start (see ``STARTUP_S``),
    the image check and the evaluation after fit included. After epoch 0, ``max_epochs`` drops to the epochs
    that fit (never below 1, never above the configured count) and a cosine schedule (``CosineAnnealingLR``
    with ``T_max`` = ``max_epochs``, stepped per epoch) is refitted to end at the new last epoch. After every
    later epoch the plan is made again from the mean epoch so far (one noisy first epoch on a shared machine
    planned 14 epochs where 17 fitted): the schedule lengthens (with ``LENGTHEN_SPARE`` of an epoch to spare) or
    shortens to match, and a run that has fallen behind stops where it is.

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
        self.configured = 0
        self._timed: list[float] = []
        self._val_started: float | None = None
        self._last_end = 0.0  # when the last validation of fitting ended
        self._epoch_s: list[float] = []  # whole epochs after the first, validation and checkpoints included
        # the plan: seconds per epoch, seconds of evaluation after fit, seconds from start to the first decision
        self.plan: dict[str, float] | None = None

    @property
    def deadline(self) -> float:
        return self.start + 60.0 * self.minutes

    def state_dict(self) -> dict:
        return {"cut_to": self.cut_to, "configured": self.configured}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cut_to, self.configured = state_dict.get("cut_to"), state_dict.get("configured", 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = False
        if trainer.fast_dev_run:  # a few batches to try the code: nothing to budget
            return
        if trainer.current_epoch > 0:  # resumed: the budget was the first process's; its cut holds, unless the
            # resume asks for another number of epochs than the run was configured with
            if self.cut_to is not None and trainer.max_epochs == self.configured:
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
        self.configured = trainer.max_epochs  # the recipe's epochs: a re-plan may come back up to them
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
        if self.plan is None:  # epoch 0: its steady steps and its validation, planned on slower epochs
            val_s = now - self._val_started
            stamps = self._timed[self.warmup_batches :] if len(self._timed) > self.warmup_batches + 2 else self._timed
            per_batch = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1) if len(stamps) > 1 else 0.0
            splits = getattr(trainer.datamodule, "splits", None) or {}
            n_val, n_test = len(splits.get("val", [])), len(splits.get("test", []))
            views = len(TTA_VIEWS.get(pl_module.hparams.get("tta", "none"), (None,)))
            self.plan = {
                "per_epoch_s": (per_batch * trainer.num_training_batches + val_s) * SLOW_EPOCH,
                # calibration (every validation image in every view) and the test (every test image in every view)
                "after_fit_s": val_s * views * (1.0 + (n_test / n_val if n_val else 1.0)),
                "decided_s": now - self.start,
            }
        else:  # later epochs: the mean of the whole epochs measured so far
            self._epoch_s.append(now - self._last_end)
            self.plan["per_epoch_s"] = sum(self._epoch_s) / len(self._epoch_s) * REPLAN_SLACK
        self._last_end = now
        self._replan(trainer, now)

    def _replan(self, trainer: L.Trainer, now: float) -> None:
        done, configured, planned = trainer.current_epoch + 1, self.configured, trainer.fit_loop.max_epochs
        left = self.deadline - now - self.plan["after_fit_s"] - self.margin_s
        per_epoch = self.plan["per_epoch_s"]
        epochs = int(trainer.strategy.broadcast(epochs_that_fit(done, configured, planned, left, per_epoch), src=0))
        first = self.epochs is None
        self.epochs = epochs
        if first and epochs >= configured:
            log.info(
                "time budget: %d epochs of ~%.0f s and %.0f s of evaluation after fit %.0f min",
                configured,
                per_epoch,
                self.plan["after_fit_s"],
                self.minutes,
            )
        if epochs == planned:
            return
        trainer.fit_loop.max_epochs = epochs
        self.cut_to = epochs if epochs < configured else None
        if epochs <= done:
            log.warning(
                "time budget: %.1f of %.0f min used after %d epochs, behind the plan of %d; stopping here to leave "
                "time for calibration and the test",
                (now - self.start) / 60,
                self.minutes,
                done,
                planned,
            )
            trainer.should_stop = True
            return
        for config in trainer.lr_scheduler_configs:
            refit_cosine(config.scheduler, epochs)
        log.info(
            "time budget: %.0f min fit %d of the %d epochs (~%.0f s each, %.0f s of evaluation after); the cosine "
            "schedule now ends at epoch %d",
            self.minutes,
            epochs,
            configured,
            per_epoch,
            self.plan["after_fit_s"],
            epochs,
        )
