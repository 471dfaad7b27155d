"""Where things are: the project root and the shared ABID development data."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_abid() -> Path:
    """The shared ABID copy (``../shared/abid`` beside the project), overridable by ``BINCOUNT_ABID``."""
    return Path(os.environ.get("BINCOUNT_ABID", PROJECT_ROOT.parent / "shared" / "abid"))
