"""bincount's Hydra configs: the package they ship in (``bincount.conf``, the checkout's top-level conf/),
the OmegaConf resolvers they use (registered on import, before Hydra composes), and composing them
outside a Hydra app (`bincount deploy`, the defaults of `bincount download` and `bincount prepare`)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bincount.objective import direction

CONFIG_PACKAGE = "bincount.conf"
CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"  # what the Hydra apps (train, eval) load


def config_file(*parts: str) -> Path:
    """A file shipped with the configs, e.g. ``config_file("cost", "prices.yaml")``."""
    with resources.as_file(resources.files(CONFIG_PACKAGE).joinpath(*parts)) as path:
        return Path(path)


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``config_name`` (train, eval, deploy) as the Hydra apps do, outside of one."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose beside it
        return hydra_compose(config_name, overrides=list(overrides or []))
    with initialize_config_module(CONFIG_PACKAGE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides or []))


def training_defaults() -> DictConfig:
    """The defaults a training run would use for what other commands also decide (the data folder, the
    split, the image size, the seed), so a command-line default never repeats a config default."""
    cfg = compose("train", ["paths.root_dir=${oc.env:BINCOUNT_ROOT,.}"])
    return OmegaConf.create({"data_dir": cfg.paths.data_dir, "seed": cfg.seed, "image_size": cfg.data.image_size,
                             "split": cfg.data.split, "ratios": list(cfg.data.ratios),
                             "classes": list(cfg.data.classes)})


# -- resolvers ------------------------------------------------------------------------------------
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
# optimized_mode (max | min) as a sweeper's direction (maximize | minimize)
OmegaConf.register_new_resolver("bincount.direction", direction, replace=True)
