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


def _sweep_job() -> tuple[str, int] | None:
    """(sweep folder name, trial number) inside a Hydra multirun trial, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    return os.path.basename(os.path.normpath(hc.sweep.dir)), hc.job.num


def _sweep_group(task: str) -> str | None:
    """One tracking group per sweep (every trial of a multirun shares it); None for a single run."""
    job = _sweep_job()
    return f"{task}-sweep-{job[0]}" if job else None


def _run_name(task: str) -> str:
    """A sweep trial is named after its number; a single run after its task."""
    job = _sweep_job()
    return f"{task}-trial-{job[1]}" if job else task


OmegaConf.register_new_resolver("bincount.auto_precision", _auto_precision, replace=True)
OmegaConf.register_new_resolver("bincount.sweep_group", _sweep_group, replace=True)
OmegaConf.register_new_resolver("bincount.run_name", _run_name, replace=True)
OmegaConf.register_new_resolver("bincount.cpu_workers", _cpu_workers, replace=True)
