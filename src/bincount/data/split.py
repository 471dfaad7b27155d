"""Deterministic train/val/test splits of bin records, and the manifest that makes them reloadable.

The manifest (``id,label,split`` CSV) goes into every run directory: reloading it gives the very
same split, so a test set never leaks into a later training run.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

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
    class_of: Callable[[BinRecord], int] | None = None,
    train_only: Sequence[int] = (),
) -> dict[str, list[BinRecord]]:
    """Split records per class with a seeded shuffle.

    A class is a record's count, or what ``class_of`` makes of it (``CountClasses.index`` of its count:
    every bin of more than K items is one class, stratified, balanced and capped as one).

    ``stratified`` keeps each class's share in every split; ``balanced`` first trims every class
    to the size of the smallest (equal images per class); ``all`` puts everything in ``test``
    (evaluation of a whole folder). ``limit_per_class`` caps each class before splitting. Classes in
    ``train_only`` go wholly to ``train`` (with ``all``, an error: it trains nothing); a class's shuffle
    does not depend on the classes sorting after it, so adding classes that sort last leaves the other classes' split as it was.
    """
    if strategy not in STRATEGIES:
        raise BincountError(f"data.split: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise BincountError(f"data.ratios: need three non-negative fractions summing to 1, got {list(ratios)}")
    if strategy == "all" and train_only:
        raise BincountError("data.split=all puts every bin in test: no class can be for training only")
    by_class: dict[int, list[BinRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        by_class[class_of(r) if class_of else r.count].append(r)
    rng = np.random.default_rng(seed)
    for label in sorted(by_class):
        items = by_class[label]
        by_class[label] = [items[i] for i in rng.permutation(len(items))]
    cap = limit_per_class
    if strategy == "balanced" and by_class:
        smallest = min((len(v) for label, v in by_class.items() if label not in train_only), default=0)
        cap = smallest if cap is None else min(cap, smallest)
    out: dict[str, list[BinRecord]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        items = by_class[label][:cap] if cap is not None else by_class[label]
        if label in train_only:
            out["train"].extend(items)
            continue
        if strategy == "all":
            out["test"].extend(items)
            continue
        n = len(items)
        n_val, n_test = round(n * ratios[1]), round(n * ratios[2])
        n_train = n - n_val - n_test
        out["train"].extend(items[:n_train])
        out["val"].extend(items[n_train : n_train + n_val])
        out["test"].extend(items[n_train + n_val :])
    return out


def write_manifest(splits: dict[str, list[BinRecord]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "split"])
        w.writerows(split_rows(splits))
    return path


def read_manifest(path: str | Path) -> list[tuple[str, int, str]]:
    """The lines of a manifest (a byte-order mark, as a spreadsheet writes one, is fine)."""
    try:
        rows = [(row["id"], int(row["label"]), row["split"]) for row in csv.DictReader(read_text(path).splitlines())]
    except FileNotFoundError:
        raise BincountError(f"data.manifest: no such file {path}") from None
    except (KeyError, ValueError, TypeError) as e:
        raise BincountError(f"data.manifest: {path} is not an id,label,split CSV ({e})") from None
    return rows


SplitRow = tuple[str, int, str]  # id, label, split: one line of a manifest

ABSENT = "named by the split but absent here"
RELABELLED = "named by the split with another count (metadata changed since)"
UNLISTED = "not named by the split (not used)"


def split_rows(splits: dict[str, list[BinRecord]]) -> list[SplitRow]:
    """The manifest lines of a split, as ``write_manifest`` writes them."""
    return [(r.id, r.count, split) for split in SPLITS for r in sorted(splits.get(split, []), key=lambda r: r.id)]


def apply_split(
    records: Sequence[BinRecord], rows: Sequence[SplitRow], source: str = "the split"
) -> tuple[dict[str, list[BinRecord]], dict[str, list[str]]]:
    """The split ``rows`` describe, over these records, and what does not fit it by reason: ids of the
    split that are absent here (deleted, skipped, or outside the classes) or now carry another count,
    and records the split does not name (added since it was made: left out, so a bin never moves into
    training from the validation or test data of an earlier run)."""
    by_id = {r.id: r for r in records}
    out: dict[str, list[BinRecord]] = {s: [] for s in SPLITS}
    misfits: dict[str, list[str]] = {ABSENT: [], RELABELLED: [], UNLISTED: []}
    named = set()
    for bin_id, label, split in rows:
        if split not in out:
            raise BincountError(f"{source}: unknown split {split!r} for id {bin_id}")
        named.add(bin_id)
        rec = by_id.get(bin_id)
        if rec is None:
            misfits[ABSENT].append(bin_id)
        elif rec.count != label:
            misfits[RELABELLED].append(bin_id)
        else:
            out[split].append(rec)
    misfits[UNLISTED] = sorted(set(by_id) - named)
    return out, {k: sorted(v) for k, v in misfits.items() if v}


def changed_splits(before: Sequence[SplitRow], after: Sequence[SplitRow]) -> list[str]:
    """Ids both splits name that are in a different part (train/val/test) of each: ``id: val -> train``."""
    old = {i: split for i, _, split in before}
    return [f"{i}: {old[i]} -> {split}" for i, _, split in sorted(after) if i in old and old[i] != split]


def apply_manifest(
    records: Sequence[BinRecord], path: str | Path
) -> tuple[dict[str, list[BinRecord]], dict[str, list[str]]]:
    """``apply_split`` with the split of a manifest file."""
    return apply_split(records, read_manifest(path), f"data.manifest: {path}")
