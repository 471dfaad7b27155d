"""bincount's Hydra configs: the package they ship in (``bincount.conf``, the checkout's top-level conf/),
the OmegaConf resolvers they use (registered on import, before Hydra composes), composing them outside a
Hydra app (`bincount deploy`, the defaults of `bincount download` and `bincount prepare`), and the check
that every value of a composed config has the type its consumer takes, before anything is read or built."""

from __future__ import annotations

import collections.abc
import difflib
import enum
import inspect
import os
import types
import typing
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError
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
    return OmegaConf.create(
        {
            "data_dir": cfg.paths.data_dir,
            "seed": cfg.seed,
            "image_size": cfg.data.image_size,
            "split": cfg.data.split,
            "ratios": list(cfg.data.ratios),
            "classes": list(cfg.data.classes),
        }
    )


# -- resolvers ------------------------------------------------------------------------------------
def _auto_precision(accelerator: str = "auto") -> str:
    """bf16 autocast where the device training runs on (the GPU, or the CPU for ``accelerator: cpu`` or
    without a GPU) computes bf16 natively; full fp32 elsewhere (a CPU without bf16 instructions would
    emulate it, slower than fp32)."""
    import torch

    from bincount.monitor.system import cpu_bf16

    if accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_bf16() else "32-true"


def _by_precision(precision: str, bf16_value, fp32_value):
    """A recipe setting that depends on the precision training runs in: ``bf16_value`` under bf16 (or bf16
    autocast), ``fp32_value`` otherwise. A CPU without bf16 instructions runs fp32 steps ~3x slower, so within
    the same time budget the quick start does better at fewer pixels there (README "How good is it")."""
    return bf16_value if str(precision).startswith("bf16") else fp32_value


def _cpu_workers(cap: int = 8) -> int:
    """Loader workers: the cores this process may use, capped."""
    return max(0, min(int(cap), len(os.sched_getaffinity(0))))


def _run_dir(task: str, ckpt_path: str | None, fresh: str) -> str:
    """Where a run writes: a training run resumed from a checkpoint of a run folder
    (``python train.py ckpt_path=RUN/checkpoints/last.ckpt``) goes on in that folder, so its history,
    debugger records and metrics cover the whole run; any other run gets the fresh folder."""
    from bincount.layout import checkpoint_run_dir

    run = checkpoint_run_dir(ckpt_path) if task == "train" and ckpt_path else None
    return str(run) if run is not None else fresh


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
OmegaConf.register_new_resolver("bincount.by_precision", _by_precision, replace=True)
OmegaConf.register_new_resolver("bincount.cpu_workers", _cpu_workers, replace=True)
# optimized_mode (max | min) as a sweeper's direction (maximize | minimize)
OmegaConf.register_new_resolver("bincount.direction", direction, replace=True)
OmegaConf.register_new_resolver("bincount.run_dir", _run_dir, replace=True)


# -- types ------------------------------------------------------------------------------------------
# Top-level keys read by train(cfg)/evaluate(cfg) themselves (the rest is read by a _target_).
TOP_LEVEL = {
    "seed": int | None,
    "test": bool,
    "ckpt_path": str | None,
    "exclude_training_ids": bool,
    "optimized_metric": str,
    "optimized_mode": typing.Literal["max", "min"],
}
_HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _matches(value, hint) -> bool:
    """Could ``value`` (a resolved config value: None, bool, int, float, str, list, dict) be passed where
    ``hint`` is annotated? A string stands for a path or an enum member; a mapping for any other object."""
    if hint in (typing.Any, inspect.Parameter.empty, object):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if value is None:
        return False
    if isinstance(value, dict) and "_target_" in value:
        return True  # an object built from config: its own keys are checked where it is defined
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return isinstance(value, dict)
    if inspect.isclass(hint) and issubclass(hint, (os.PathLike, enum.Enum)):
        return isinstance(value, str)  # a path, or an enum member by name
    # any other class (a Tensor, a timedelta, a Callable): a config can only describe it as a mapping
    return isinstance(value, dict)


def _describe(hint) -> str:
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in _SEQUENCES or hint in (list, tuple):
        if not args or args[0] is Ellipsis:
            return "a list"
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], _describe(args[0]) + ' values')}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(
        hint, "a mapping" if origin in _MAPPINGS or hint in _MAPPINGS else getattr(hint, "__name__", str(hint))
    )


def _signature(target: str):
    """Parameters and type hints of a ``_target_``; None when it cannot be imported here (instantiating
    it will say why)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        return None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # annotations naming what this Python cannot resolve: check names only
        hints = {}
    return params, hints


def _check_value(cfg: DictConfig, key: str, value, hint) -> None:
    if value == "???" or _matches(value, hint):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _matches(str(value), hint):
        OmegaConf.update(cfg, key, str(value), merge=False)  # a name or path typed as digits (data.root=2024)
        return
    raise BincountError(f"{key}: {value!r} is not {_describe(hint)}")


def _check_node(cfg: DictConfig, node: dict, path: str) -> None:
    target = node.get("_target_")
    found = _signature(target) if isinstance(target, str) else None
    if found is not None:
        params, hints = found
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for name, value in node.items():
            if name in _HYDRA_KEYS:
                continue
            key = f"{path}.{name}" if path else name
            if name not in params and not takes_any:
                close = difflib.get_close_matches(name, list(params), n=1)
                raise BincountError(
                    f"{key}: {target.rsplit('.', 1)[-1]} takes no argument {name!r}"
                    + (f" (did you mean {close[0]}?)" if close else "")
                )
            if name in params:
                hint = hints.get(name, params[name].annotation)
                if not isinstance(hint, str):  # an annotation left as text could not be resolved: not checked
                    _check_value(cfg, key, value, hint)
    for name, value in node.items():
        if isinstance(value, dict):
            _check_node(cfg, value, f"{path}.{name}" if path else name)


def check_config(cfg: DictConfig) -> None:
    """One line naming the key of the first value that has the wrong type (``trainer.max_epochs=abc``) or
    that no consumer takes, found from the types of the ``_target_`` signatures, before any data is read
    or any model built. A number given where a string is expected becomes the string."""
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    values.pop("hydra", None)
    for key, hint in TOP_LEVEL.items():
        if key in values:
            _check_value(cfg, key, values[key], hint)
    _check_node(cfg, values, "")
