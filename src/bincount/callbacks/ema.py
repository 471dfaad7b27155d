"""An exponential moving average of the weights that stays out of evaluations after training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


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
