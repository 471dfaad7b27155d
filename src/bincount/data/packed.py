"""The packed format: every image decoded and resized once, stored as uint8 in one memory-mapped file.

A packed folder holds ``images.npy`` (``N x S x S x 3`` uint8, an ordinary ``.npy`` that ``np.load``
maps without reading) and ``packed.json`` (format, image size, the id and count of each row, and what
was skipped while packing). Training then reads rows instead of decoding JPEGs every epoch, and the
loader hands whole uint8 batches to the model's device, where ``gpu_augment`` does the augmentation.

A packed folder is a drop-in ``data.root``: the data module recognises it by ``packed.json``, the
records it yields have the same ids and counts, so splits and manifests are the same as over the
JPEG folder it came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from bincount.counts import CountClasses
from bincount.data.dataset import checked_aux, class_indices
from bincount.data.images import load_rgb
from bincount.data.records import (
    LISTED_ABSENT,
    NOT_IN_CLASSES,
    BinRecord,
    SkipReport,
    answer_set,
    load_file_list,
    read_abid,
)
from bincount.errors import BincountError
from bincount.progress import progress

INDEX_NAME = "packed.json"
IMAGES_NAME = "images.npy"
FORMAT = "bincount-packed"
VERSION = 1


def is_packed(root: str | Path) -> bool:
    return (Path(root) / INDEX_NAME).is_file()


def _decode(record: BinRecord, resize: v2.Resize) -> np.ndarray:
    # The same decode and resize as the JPEG path's first steps (load_rgb + Resize), so a packed row
    # is exactly the image the JPEG path would have augmented.
    return np.asarray(resize(load_rgb(record.image, resize.size[0])), dtype=np.uint8)


def decoded_rows(
    records: Sequence[BinRecord], image_size: int, workers: int | None = None, chunk: int = 512
) -> Iterator[np.ndarray]:
    """Each record's image decoded and resized to ``image_size`` square, as uint8 H x W x 3, in order;
    decoded in threads a chunk at a time, so memory stays bounded on a dataset of any size."""
    resize = v2.Resize((image_size, image_size), antialias=True)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(records), chunk):
            yield from pool.map(lambda r: _decode(r, resize), records[start : start + chunk])


def decode_in_memory(records: Sequence[BinRecord], image_size: int) -> np.ndarray:
    """Every record's image as one N x S x S x 3 uint8 array in memory (the in-memory data path)."""
    images = np.empty((len(records), image_size, image_size, 3), dtype=np.uint8)
    rows = decoded_rows(records, image_size)
    for i, row in enumerate(
        progress(rows, total=len(records), description=f"decoding {len(records)} images into memory")
    ):
        images[i] = row
    return images


def write_packed(
    records: Sequence[BinRecord],
    out: str | Path,
    image_size: int = 224,
    report: SkipReport | None = None,
    source: str = "",
    workers: int | None = None,
) -> Path:
    """Decode and resize every record's image to ``image_size`` x ``image_size`` and write a packed
    folder at ``out``. ``report`` (what the reader skipped) is kept in the index so a training run on
    the packed folder still reports it. Files appear complete or not at all (written, then renamed)."""
    if not records:
        raise BincountError(f"pack: no records to write to {out}; check the source folder and the classes")
    if any(r.count is None for r in records):
        raise BincountError("pack: only labelled records can be packed (a record has no count)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r.id)
    tmp_images = out / f".{IMAGES_NAME}.{os.getpid()}.tmp"
    images = np.lib.format.open_memmap(
        tmp_images, mode="w+", dtype=np.uint8, shape=(len(records), image_size, image_size, 3)
    )
    try:
        rows = decoded_rows(records, image_size, workers)
        for i, row in enumerate(progress(rows, total=len(records), description=f"packing {len(records)} images")):
            images[i] = row
        images.flush()
        del images
        os.replace(tmp_images, out / IMAGES_NAME)
    finally:
        tmp_images.unlink(missing_ok=True)
    index = {
        "format": FORMAT,
        "version": VERSION,
        "image_size": image_size,
        "source": str(source),
        "ids": [r.id for r in records],
        "counts": [int(r.count) for r in records],
        "skipped": (report or SkipReport()).skipped,
    }
    tmp_index = out / f".{INDEX_NAME}.{os.getpid()}.tmp"
    tmp_index.write_text(json.dumps(index))
    os.replace(tmp_index, out / INDEX_NAME)
    return out


def pack_abid(
    root: str | Path,
    out: str | Path,
    image_size: int = 224,
    classes: Sequence[int] | CountClasses | None = None,
    file_list: str | Path | None = None,
) -> Path:
    """Pack every usable labelled image of an ABID-layout folder (all counts unless ``classes``)."""
    records, report = read_abid(root, classes, file_list)
    return write_packed(records, out, image_size, report, source=str(root))


def read_index(root: str | Path) -> dict:
    path = Path(root) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BincountError(f"data.root: {path} is not a readable packed index ({e}); repack the folder") from None
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise BincountError(f"data.root: {path} is not a {FORMAT} v{VERSION} index; repack with this bincount version")
    if not (Path(root) / IMAGES_NAME).is_file():
        raise BincountError(f"data.root: {root} has {INDEX_NAME} but no {IMAGES_NAME}; repack the folder")
    return index


def read_packed(
    root: str | Path, classes: Sequence[int] | CountClasses | None = None, file_list: str | Path | None = None
) -> tuple[list[BinRecord], SkipReport]:
    """Records of a packed folder, filtered as ``read_abid`` filters an ABID folder, with the skip
    report of the packing merged in. A record's ``image`` is the packed file; its row is found by id."""
    index = read_index(root)
    report = SkipReport({reason: list(ids) for reason, ids in index.get("skipped", {}).items()})
    wanted = answer_set(classes)
    listed = load_file_list(file_list) if file_list else None
    images = str(Path(root) / IMAGES_NAME)
    records = []
    for bin_id, count in zip(index["ids"], index["counts"]):
        if listed is not None and bin_id not in listed:
            continue
        if listed is not None and listed[bin_id] != count:
            report.add("count disagrees with file_list", bin_id)
        elif wanted is not None and not wanted.covers(count):
            report.add(NOT_IN_CLASSES, bin_id)
        else:
            records.append(BinRecord(id=bin_id, image=images, count=count))
    if listed is not None:
        for missing in sorted(set(listed) - set(index["ids"])):
            report.add(LISTED_ABSENT, missing)
    return records, report


def keep_batch(batch):
    """collate_fn for PackedDataset: its ``__getitems__`` already returns a whole batch."""
    return batch


class RowsDataset(Dataset):
    """Rows of an ``N x S x S x 3`` uint8 array for some records. Fetched a batch at a time
    (``__getitems__``, which torch's DataLoader calls with the sampler's indices; use
    ``collate_fn=keep_batch``): returns a uint8 ``N x 3 x S x S`` tensor in channels_last memory and the
    class indices (and with ``aux`` each row's auxiliary targets). ``row_of`` maps a record's id to its row."""

    def __init__(
        self,
        images: np.ndarray | None,
        row_of: dict[str, int],
        records: Sequence[BinRecord],
        classes: Sequence[int] | CountClasses,
        source: str = "the image array",
        aux: np.ndarray | None = None,
    ):
        missing = [r.id for r in records if r.id not in row_of]
        if missing:
            raise BincountError(
                f"data: {len(missing)} id(s) are not in {source} (e.g. {missing[0]}); repack it or use its own manifest"
            )
        self.rows = np.array([row_of[r.id] for r in records], dtype=np.int64)
        self.labels = np.array(class_indices(records, classes), dtype=np.int64)
        self.aux = checked_aux(aux, len(self.rows))
        self._images = images

    @property
    def images(self) -> np.ndarray:
        return self._images

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: Sequence[int]) -> tuple[torch.Tensor, ...]:
        positions = np.asarray(positions, dtype=np.int64)
        positions = positions[np.argsort(self.rows[positions], kind="stable")]  # read the file forwards
        x = torch.from_numpy(self.images[self.rows[positions]])  # N,H,W,C: a copy out of the array
        batch = x.permute(0, 3, 1, 2), torch.from_numpy(self.labels[positions])
        return batch if self.aux is None else (*batch, torch.from_numpy(self.aux[positions]))

    def __getitem__(self, i: int) -> tuple:
        x, y, *aux = self.__getitems__([i])
        return (x[0], int(y[0]), *(a[0] for a in aux))


class PackedDataset(RowsDataset):
    """Rows of a packed folder for some records; the file is memory-mapped lazily, in each loader worker."""

    def __init__(
        self,
        root: str | Path,
        records: Sequence[BinRecord],
        classes: Sequence[int] | CountClasses,
        aux: np.ndarray | None = None,
    ):
        index = read_index(root)
        row_of = {bin_id: i for i, bin_id in enumerate(index["ids"])}
        super().__init__(None, row_of, records, classes, source=f"the packed folder {root}", aux=aux)
        self.path = str(Path(root) / IMAGES_NAME)
        self.image_size = int(index["image_size"])

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def __getstate__(self):  # never pickle the mapping into loader workers
        return {**self.__dict__, "_images": None}
