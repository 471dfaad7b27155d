"""A torch Dataset over bin records: decodes each image and returns (tensor, class index)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

from bincount.data.records import BinRecord


def load_rgb(path: str, min_side: int | None = None) -> Image.Image:
    """Decode an image as RGB; for JPEGs ask libjpeg for a DCT-scaled decode no smaller than
    ``min_side``, several times faster on full-resolution originals."""
    with Image.open(path) as im:
        if min_side:
            im.draft("RGB", (min_side, min_side))
        return im.convert("RGB")


class BinImageDataset(Dataset):
    def __init__(self, records: Sequence[BinRecord], classes: Sequence[int], transform: Callable,
                 decode_size: int | None = None):
        self.records = list(records)
        self.index = {c: i for i, c in enumerate(classes)}
        self.transform = transform
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        return self.transform(load_rgb(rec.image, self.decode_size)), self.index[rec.count]
