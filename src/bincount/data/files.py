"""Reading a user's text files, and writing files so that no reader ever sees a partial one: write a
hidden temporary file in the same folder, then rename it over the target (a rename is atomic on one
filesystem).

A process killed midway leaves only its temporary file; ``remove_stale_temps`` clears those of
processes that no longer run, so a rerun starts clean while a live writer's files are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bincount.errors import BincountError

TEMP_SUFFIX = ".tmp"


def read_text(path: str | Path) -> str:
    """A CSV or JSON file a person may have saved from a spreadsheet or editor: UTF-8 with or without
    the byte-order mark (which would otherwise become part of the first column's name or break JSON)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise BincountError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _temp_path(path: Path) -> Path:
    # ".<name>.<pid>.<unique>.tmp": hidden, never an image suffix, and names its writer's pid
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path``, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files left in ``folder`` by writers that are gone; returns how many."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        parts = p.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is None or not _alive(pid):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
