"""The Trainer benchmarks' step clock (a Lightning callback), apart from benchmarks/common.py so that
what does not train never imports Lightning."""

from __future__ import annotations

import time

import lightning as L

from benchmarks.common import median, sync


class StepClock(L.Callback):
    """Start time of every training step from step ``warmup`` on, and images seen since. No
    synchronisation between steps (the CPU may run ahead as in training); on a GPU one at the first
    measured step and one at the end, so the total counts all device work."""

    def __init__(self, warmup: int):
        self.warmup, self.starts, self.images, self.seconds = warmup, [], 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
        if trainer.global_step >= self.warmup:
            self.starts.append(time.perf_counter())
            self.images += len(batch[1])

    def on_train_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.seconds = time.perf_counter() - self.starts[0]

    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]

    def summary(self, batch: int) -> dict:
        step = median(self.step_seconds())
        return {
            "images_per_s": round(self.images / self.seconds, 1),
            "steady_images_per_s": round(batch / step, 1),
            "measured_images": self.images,
            "step_ms_median": round(step * 1e3, 2),
            "step_ms_max": round(max(self.step_seconds()) * 1e3, 1),
        }
