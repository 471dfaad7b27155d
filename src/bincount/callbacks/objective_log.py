"""One log line per validation with the optimized metric, and its best value when fitting ends: what log
scrapers such as SageMaker's HyperparameterTuner read (bincount.launch.sagemaker_tuner.metric_definitions)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


class ObjectiveLog(L.Callback):
    """Prints ``bincount: val/acc=0.412300`` after every validation and ``bincount: val/acc_best=0.451200``
    (the best checkpoint's score) when fitting ends."""

    def __init__(self, metric: str):
        self.metric = metric

    # on_validation_end: after the module has logged its epoch metrics (epoch-end hooks run callbacks first)
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        # while fitting only: the calibration pass after fit validates once more, and the tuner must not read it
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if value is not None and fitting and trainer.is_global_zero:
            print(f"bincount: {self.metric}={float(value):.6f}", flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_score", None)
        if best is not None and trainer.is_global_zero:
            print(f"bincount: {self.metric}_best={float(best):.6f}", flush=True)
