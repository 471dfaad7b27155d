"""Lightning callbacks of our own: per-epoch history with learning-curve plots, and an exponential
moving average of the weights that stays out of evaluations after training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from bincount.reports.plots import plot_curves

TRACKED = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/rmse", "val/mae")


class MetricsHistory(L.Callback):
    """Keeps each epoch's train and val metrics and writes ``history.json`` and ``curves.png``
    into the run directory, whichever loggers are on."""

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)
        self.history: list[dict] = []
        self._pending: int | None = None

    # Lightning calls plain callbacks' on_train_epoch_end before the module logs its epoch metrics,
    # so an epoch is recorded at the next epoch's start (or at fit end), when all of them are in.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def _flush(self, trainer: L.Trainer) -> None:
        epoch, self._pending = self._pending, None
        if epoch is None:
            return
        row = {"epoch": epoch}
        for key in TRACKED:
            if key in trainer.callback_metrics:
                row[key.replace("_epoch", "")] = float(trainer.callback_metrics[key])
        self.history.append(row)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        if not trainer.is_global_zero or not self.history:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "history.json").write_text(json.dumps(self.history, indent=2))
        plot_curves(self.history, self.output_dir / "curves.png")


class EMA(EMAWeightAveraging):
    """Lightning's EMA of the weights (validated, checkpointed and kept at the end of fit), confined to
    fitting. Lightning's callback also swaps its average in for any later ``trainer.validate`` and, when
    ``trainer.test(ckpt_path=...)`` loads a checkpoint, restores the raw weights that checkpoint keeps
    beside the average, so the best checkpoint would be tested and calibrated with the wrong weights."""

    def _fitting(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._fitting(trainer):  # resuming: the raw weights and the average both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
