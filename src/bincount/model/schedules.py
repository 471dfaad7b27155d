"""Learning-rate schedules refitted in flight: a per-epoch cosine made to end at another epoch."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import CosineAnnealingLR


def refit_cosine(scheduler: CosineAnnealingLR, epochs: int) -> None:
    """``T_max`` = ``epochs``, and every group's learning rate set to the schedule's closed form at the step it
    has taken (one per epoch trained), from which its recursive updates go on."""
    scheduler.T_max = epochs
    step = scheduler.last_epoch
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * step / epochs)) / 2
