"""OmegaConf resolvers used by conf/ (registered on import, before Hydra composes)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def _auto_precision() -> str:
    """bf16 autocast where the GPU supports it, full fp32 on CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _cpu_workers(cap: int = 8) -> int:
    """Loader workers: the cores this process may use, capped."""
    return max(0, min(int(cap), len(os.sched_getaffinity(0))))


OmegaConf.register_new_resolver("bincount.auto_precision", _auto_precision, replace=True)
OmegaConf.register_new_resolver("bincount.cpu_workers", _cpu_workers, replace=True)
