"""The local launcher: run train(cfg) right here."""

from __future__ import annotations

from omegaconf import DictConfig

from bincount.training import train


class LocalLauncher:
    def launch(self, cfg: DictConfig) -> float | None:
        return train(cfg)
