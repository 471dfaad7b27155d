"""An exponential moving average of the weights, free of its starting point and confined to fitting."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


def debiased_ema(decay: float):
    """The ``multi_avg_fn`` of an EMA whose k-th update weighs the weights seen so far as
    ``sum_i decay^(k-i) w_i / sum_i decay^(k-i)``: Adam's bias correction applied to the average itself. A plain
    EMA starts from the first weights and still gives them ``decay^k`` of the average (at decay 0.998, 22 % after
    760 steps), which drags early validations far below the network being trained; late in a run the two agree."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        k = int(num_averaged) + 1  # this update's index; AveragedModel copies the first weights itself (k = 1)
        weight = (1.0 - decay) / (1.0 - decay**k)
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, weight)
        else:  # counters such as BatchNorm's num_batches_tracked: the network's own
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class EMA(WeightAveraging):
    """Lightning's weight averaging with a debiased EMA (:func:`debiased_ema`) updated after every optimizer step:
    validation (and so the choice of the best epoch) and the checkpoints' ``state_dict`` hold the average, and
    fit ends with the network set to it. Confined to fitting: Lightning's callback also swaps its average in for
    any later ``trainer.validate`` and, when ``trainer.test(ckpt_path=...)`` loads a checkpoint, restores the raw
    weights that checkpoint keeps beside the average, so the best checkpoint would be tested and calibrated
    with the wrong weights."""

    def __init__(self, decay: float = 0.998, use_buffers: bool = True):
        super().__init__(use_buffers=use_buffers, multi_avg_fn=debiased_ema(decay))

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
