"""Where things are: the project root, the shared ABID development data, and the run folder a checkpoint
belongs to."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_abid() -> Path:
    """The shared ABID copy (``../shared/abid`` beside the project), overridable by ``BINCOUNT_ABID``."""
    return Path(os.environ.get("BINCOUNT_ABID", PROJECT_ROOT.parent / "shared" / "abid"))


def checkpoint_run_dir(ckpt: str | Path) -> Path | None:
    """The run folder of train.py a checkpoint was written into (``RUN/checkpoints/last.ckpt`` -> ``RUN``,
    recognised by the ``.hydra`` folder Hydra leaves in every run folder); None for a checkpoint elsewhere."""
    ckpt = Path(ckpt)
    run = ckpt.parent.parent
    return run if ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir() else None
