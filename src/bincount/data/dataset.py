"""A torch Dataset over bin records: decodes each image and returns (tensor, class index)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.utils.data import Dataset

from bincount.data.images import load_rgb
from bincount.data.records import BinRecord


class BinImageDataset(Dataset):
    def __init__(
        self, records: Sequence[BinRecord], classes: Sequence[int], transform: Callable, decode_size: int | None = None
    ):
        self.records = list(records)
        self.index = {c: i for i, c in enumerate(classes)}
        self.transform = transform
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        return self.transform(load_rgb(rec.image, self.decode_size)), self.index[rec.count]
