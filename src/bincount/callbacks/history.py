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
        (self.output_dir / HISTORY).write_text(json.dumps(self.history, indent=2))
        plot_curves(self.history, self.output_dir / CURVES)
