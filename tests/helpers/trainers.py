"""A quiet Lightning Trainer on the CPU for tests that train without Hydra: no logger, progress bar or model
summary; checkpointing only where a test passes its own callback."""

from __future__ import annotations

import lightning as L


def quiet_trainer(max_epochs: int, callbacks=(), checkpoints: bool = False, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=checkpoints,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )
