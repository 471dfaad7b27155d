"""Where a development checkout's things are, for the tests, benchmarks and notebook run from it: the
checkout's root and the shared ABID development data. The library itself never reads the checkout (its
configs ship as the package bincount.conf; see bincount.config), so an installed bincount works without one."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_abid() -> Path:
    """The shared ABID copy (``../shared/abid`` beside the project), overridable by ``BINCOUNT_ABID``."""
    return Path(os.environ.get("BINCOUNT_ABID", PROJECT_ROOT.parent / "shared" / "abid"))
