"""Deterministic train/val/test splits of bin records, and the manifest that makes them reloadable.

The manifest (``id,label,split`` CSV) goes into every run directory: reloading it gives the very
same split, so a test set never leaks into a later training run.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bincount.data.files import read_text
from bincount.data.records import BinRecord
from bincount.errors import BincountError

SPLITS = ("train", "val", "test")
STRATEGIES = ("stratified", "balanced", "all")


def split_records(
    records: Sequence[BinRecord],
    strategy: str = "stratified",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    limit_per_class: int | None = None,
) -> dict[str, list[BinRecord]]:
    """Split records per class with a seeded shuffle.

    ``stratified`` keeps each class's share in every split; ``balanced`` first trims every class
    to the size of the smallest (equal images per class); ``all`` puts everything in ``test``
    (evaluation of a whole folder). ``limit_per_class`` caps each class before splitting.
    """
    if strategy not in STRATEGIES:
        raise BincountError(f"data.split: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise BincountError(f"data.ratios: need three non-negative fractions summing to 1, got {list(ratios)}")
    by_class: dict[int, list[BinRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        by_class[r.count].append(r)
    rng = np.random.default_rng(seed)
    for label in sorted(by_class):
        items = by_class[label]
        by_class[label] = [items[i] for i in rng.permutation(len(items))]
    cap = limit_per_class
    if strategy == "balanced" and by_class:
        smallest = min(len(v) for v in by_class.values())
        cap = smallest if cap is None else min(cap, smallest)
    out: dict[str, list[BinRecord]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        items = by_class[label][:cap] if cap is not None else by_class[label]
        if strategy == "all":
            out["test"].extend(items)
            continue
        n = len(items)
        n_val, n_test = round(n * ratios[1]), round(n * ratios[2])
        n_train = n - n_val - n_test
        out["train"].extend(items[:n_train])
        out["val"].extend(items[n_train:n_train + n_val])
        out["test"].extend(items[n_train + n_val:])
    return out


def write_manifest(splits: dict[str, list[BinRecord]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "split"])
        for split in SPLITS:
            for r in sorted(splits.get(split, []), key=lambda r: r.id):
                w.writerow([r.id, r.count, split])
    return path


def read_manifest(path: str | Path) -> list[tuple[str, int, str]]:
    try:
        rows = [(row["id"], int(row["label"]), row["split"]) for row in csv.DictReader(read_text(path).splitlines())]
    except FileNotFoundError:
        raise BincountError(f"data.manifest: no such file {path}") from None
    except (KeyError, ValueError) as e:
        raise BincountError(f"data.manifest: {path} is not an id,label,split CSV ({e})") from None
    return rows


def apply_manifest(records: Sequence[BinRecord], path: str | Path) -> tuple[dict[str, list[BinRecord]], list[str]]:
    """The split a manifest describes, over these records; also the manifest ids that are not usable
    here (absent, unreadable, or labelled differently), so the caller can report them."""
    by_id = {r.id: r for r in records}
    out: dict[str, list[BinRecord]] = {s: [] for s in SPLITS}
    unusable = []
    for bin_id, label, split in read_manifest(path):
        rec = by_id.get(bin_id)
        if split not in out:
            raise BincountError(f"data.manifest: {path} has unknown split {split!r} for id {bin_id}")
        if rec is None or rec.count != label:
            unusable.append(bin_id)
            continue
        out[split].append(rec)
    return out, unusable
