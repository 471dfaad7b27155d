"""A torch Dataset over bin records: decodes each image and returns (tensor, class index), and the bin's
auxiliary targets (bincount.data.aux_targets) where it is given them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bincount.counts import CountClasses
from bincount.data.images import load_rgb
from bincount.data.records import BinRecord, answer_set
from bincount.errors import BincountError


def class_indices(records: Sequence[BinRecord], classes: Sequence[int] | CountClasses) -> list[int]:
    """The class of each record (``CountClasses.index`` of its count; a list of counts: exact counts
    only); a record without a class is a caller's error, named here."""
    counts = answer_set(classes)
    labels = [counts.index(r.count) for r in records]
    missing = [r.id for r, label in zip(records, labels) if label is None]
    if missing:
        raise BincountError(f"data: {len(missing)} bin(s) have no class among {counts} (e.g. {missing[0]})")
    return labels


def checked_aux(aux: np.ndarray | None, n: int) -> np.ndarray | None:
    """Auxiliary targets, one row per record, or None."""
    if aux is not None and len(aux) != n:
        raise BincountError(f"data: {len(aux)} rows of auxiliary targets for {n} records")
    return aux


class BinImageDataset(Dataset):
    """``classes``: a ``CountClasses`` (with the overflow class) or a list of exact counts. ``aux``: a row of
    auxiliary targets per record (``aux_matrix``), returned as a third item."""

    def __init__(
        self,
        records: Sequence[BinRecord],
        classes: Sequence[int] | CountClasses,
        transform: Callable,
        decode_size: int | None = None,
        aux: np.ndarray | None = None,
    ):
        self.records = list(records)
        self.labels = class_indices(self.records, classes)
        self.aux = checked_aux(aux, len(self.records))
        self.transform = transform
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        x = self.transform(load_rgb(rec.image, self.decode_size))
        return (x, self.labels[i]) if self.aux is None else (x, self.labels[i], torch.from_numpy(self.aux[i]))
