"""Errors a user can cause and fix: shown as one sentence, not a traceback."""

from __future__ import annotations

import re

# The module each optional extra of pyproject.toml brings, and that extra: `bash scripts/setup.sh core` (the
# README's first command) installs none of them
EXTRA_OF_MODULE = {
    "sagemaker": "sagemaker",
    "wandb": "wandb",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "optuna": "sweep",
    "hydra_plugins.hydra_optuna_sweeper": "sweep",
    "moto": "dev",
}


class BincountError(Exception):
    """A problem with input or configuration; the message names the cause and the fix."""


def missing_extra(exc: BaseException) -> str | None:
    """One sentence naming the extra to install when ``exc`` is the import of an optional package that is not
    installed (Python's own ModuleNotFoundError, or Lightning's 'Requirement ... not met'); None otherwise."""
    if not isinstance(exc, ImportError):
        return None
    name = exc.name
    if name is None:  # Lightning: ModuleNotFoundError("Requirement 'wandb>=0.12.10' not met. HINT: ...")
        found = re.match(r"Requirement '([A-Za-z0-9_.]+)", str(exc))
        name = found.group(1) if found else ""
    module = next((m for m in EXTRA_OF_MODULE if name == m or name.startswith(m + ".")), None)
    if module is None:
        return None
    extra = EXTRA_OF_MODULE[module]
    return (
        f"this needs {module}, in bincount's optional extra '{extra}', which is not installed: "
        f"pip install 'bincount[{extra}]' (in a checkout: bash scripts/setup.sh, which installs every extra)"
    )


def explain(exc: BaseException) -> str | None:
    """One sentence for an error a user caused, found anywhere in the exception's cause chain
    (Hydra wraps errors raised while instantiating a config); None for a genuine bug."""
    from omegaconf.errors import OmegaConfBaseException

    seen = exc
    while seen is not None:
        if isinstance(seen, BincountError):
            return str(seen)
        if (message := missing_extra(seen)) is not None:
            return message
        if isinstance(seen, OmegaConfBaseException):
            key = getattr(seen, "full_key", None)
            first = str(seen).splitlines()[0]
            return f"config key {key}: {first}" if key else first
        seen = seen.__cause__ or seen.__context__
    return None
