"""Per-epoch history of a run's metrics, with learning-curve plots."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from bincount.layout import CURVES, HISTORY
from bincount.reports.plots import plot_curves

TRACKED = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/rmse", "val/mae")


class MetricsHistory(L.Callback):
    """Keeps each epoch's train and val metrics and writes ``history.json`` and ``curves.png``
    into the run directory, whichever loggers are on. The rows travel in checkpoints, so a resumed
    run's history covers the whole run."""

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)
        self.history: list[dict] = []
        self._pending: int | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        # ModelCheckpoint saves at an epoch's end after the module has logged that epoch's metrics:
        # record the epoch now, so a run resumed from this checkpoint misses no row.
        if self._trainer is not None:
            self._flush(self._trainer)
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]
        self._pending = None

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
        (self.output_dir / HISTORY).write_text(json.dumps(self.history, indent=2))
        plot_curves(self.history, self.output_dir / CURVES)
