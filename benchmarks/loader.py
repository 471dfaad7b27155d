"""Loader throughput: images/s delivered to the training step, training augmentation included.

* naive: as the seeds did, ImageFolder-style: PIL decodes the full-resolution JPEG every epoch, then
  the per-image torchvision training transform runs in the loader workers;
* jpeg: bincount's JPEG path (a DCT-scaled decode no larger than needed, same transform);
* packed: rows of the memory-mapped packed file, then the batched augmentation on the device (here
  the CPU, in the training process: it is counted).

Then the quickstart recipe under the Trainer: the share of training-step time spent waiting for data
(fetching the next batch plus moving it to the device and transforming it there).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Row, interleaved, median
from bincount.data.dataset import BinImageDataset
from bincount.data.gpu_augment import train_batch_transform
from bincount.data.packed import INDEX_NAME, PackedDataset, keep_batch, pack_abid, write_packed
from bincount.data.records import BinRecord, read_abid
from bincount.data.transforms import train_transform


class FullDecodeDataset(Dataset):
    """The seeds' loader: torchvision ImageFolder's PIL loader (full decode) + a per-image transform."""

    def __init__(self, records: list[BinRecord], classes: list[int], transform):
        self.records, self.index, self.transform = records, {c: i for i, c in enumerate(classes)}, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        with open(rec.image, "rb") as f:
            image = Image.open(f).convert("RGB")
        return self.transform(image), self.index[rec.count]


def packed_copy(src: Path, cache: Path, size: int) -> Path:
    """A packed copy of ``src`` at ``size`` px, made once and reused while it matches."""
    out = cache / f"{src.name}-{size}"
    try:
        index = json.loads((out / INDEX_NAME).read_text())
        if index["image_size"] == size and index["source"] == str(src):
            return out
    except (OSError, ValueError, KeyError):
        pass
    return pack_abid(src, out, size)


def _epoch(loader: DataLoader, on_device=None) -> float:
    """Images per second over one pass of ``loader`` (its workers already started)."""
    images, start = 0, time.perf_counter()
    for x, y in loader:
        if on_device is not None:
            x = on_device(x)
        images += len(y)
    return images / (time.perf_counter() - start)


def loader_rows(
    src: Path, records: list[BinRecord], packed: dict[int, Path], rounds: int, batch_size: int = 64, workers: int = 2
) -> list[Row]:
    classes = sorted({r.count for r in records})
    rows = []
    for size, folder in packed.items():
        augment = train_batch_transform(size)
        datasets = {
            "naive": FullDecodeDataset(records, classes, train_transform(size)),
            "jpeg": BinImageDataset(records, classes, train_transform(size), decode_size=size),
            "packed": PackedDataset(folder, records, classes),
        }
        loaders = {
            name: DataLoader(
                ds,
                batch_size=batch_size,
                shuffle=True,
                num_workers=workers,
                persistent_workers=True,
                collate_fn=keep_batch if name == "packed" else None,
            )
            for name, ds in datasets.items()
        }
        for name, loader in loaders.items():  # warm-up: start workers, fill the page cache
            _epoch(loader, augment if name == "packed" else None)
        rates = interleaved(
            {
                name: (lambda ld=loader, n=name, a=augment: _epoch(ld, a if n == "packed" else None))
                for name, loader in loaders.items()
            },
            rounds,
        )
        details = {"images": len(records), "batch_size": batch_size, "workers": workers, "rounds": rates}
        naive = median(rates["naive"])
        rows.append(
            Row(
                f"loader {size}px",
                "images/s to the step",
                "naive (PIL full decode)",
                naive,
                "packed + batched augment",
                median(rates["packed"]),
                ["ratio >= 5"],
                details,
            )
        )
        rows.append(
            Row(
                f"loader {size}px",
                "images/s to the step",
                "naive (PIL full decode)",
                naive,
                "bincount JPEG path (draft decode)",
                median(rates["jpeg"]),
                [],
                details,
            )
        )
    return rows


def _quickstart(root: Path, out: Path, steps: int, smoke: bool):
    """The quickstart recipe's data module and model, composed from conf/ as train.py does."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import bincount.config  # noqa: F401  (resolvers)
    from bincount.paths import PROJECT_ROOT

    overrides = [
        "experiment=quickstart",
        f"data.root={root}",
        f"paths.root_dir={PROJECT_ROOT}",
        f"paths.output_dir={out}",
        "data.download_to=null",
    ]
    if smoke:
        overrides += [
            "model.backbone=resnet10t",
            "data.image_size=32",
            "data.batch_size=8",
            "data.limit_per_class=10",
            "data.check_images=false",
        ]
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return instantiate(cfg.data), instantiate(cfg.model), cfg


def data_wait(root: Path, steps: int, smoke: bool) -> dict:
    """Fit the quickstart recipe for ``steps`` steps with Lightning's profiler; the share of the time
    spent waiting for data (next batch + transfer and on-device transform) versus the whole."""
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    with tempfile.TemporaryDirectory() as out:
        datamodule, model, cfg = _quickstart(root, Path(out), steps, smoke)
        profiler = SimpleProfiler(dirpath=out, filename="profile")  # its report to a file, not stdout
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            profiler=profiler,
        )
        trainer.fit(model, datamodule=datamodule)
    durations = profiler.recorded_durations
    skip = 2  # the first steps start workers and allocate
    fetch = sum(durations["[_TrainingEpochLoop].train_dataloader_next"][skip:])
    transfer = sum(durations["[Strategy]SingleDeviceStrategy.batch_to_device"][skip:])
    step = sum(durations["run_training_batch"][skip:])
    return {
        "wait_fraction": (fetch + transfer) / (fetch + transfer + step),
        "fetch_s": fetch,
        "transfer_and_transform_s": transfer,
        "step_s": step,
        "steps": steps - skip,
        "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size,
        "workers": cfg.data.num_workers,
    }


def wait_rows(src: Path, packed: Path, steps: int, smoke: bool) -> list[Row]:
    jpeg, fast = data_wait(src, steps, smoke), data_wait(packed, steps, smoke)
    return [
        Row(
            "quickstart data wait",
            "share of step time waiting",
            "JPEG path",
            jpeg["wait_fraction"],
            "packed path",
            fast["wait_fraction"],
            ["candidate <= 0.05"],
            {"jpeg": jpeg, "packed": fast},
        )
    ]


def run(abid: Path, cache: Path, smoke: bool) -> list[Row]:
    """On ABID's full-resolution originals (raw/): at 224 px (the ResNet-50 recipe) and 96 px (the
    quickstart recipe's size); a smoke run takes 48 images at 32 px."""
    src = abid / "raw"
    torch.manual_seed(0)
    records = sorted(read_abid(src)[0], key=lambda r: r.id)
    if smoke:
        records = records[:48]
        packed = write_packed(records, cache / "smoke-32", 32)
        return loader_rows(src, records, {32: packed}, rounds=1, batch_size=16) + wait_rows(src, packed, 4, True)
    packed = {size: packed_copy(src, cache, size) for size in (224, 96)}
    return loader_rows(src, records, packed, rounds=3) + wait_rows(src, packed[96], 24, False)
