"""End-to-end ResNet-50 training at 224 px on a GPU, images/s under the Trainer:

* synthetic: one normalised batch already on the GPU, fed every step (the ceiling: no data path),
  with as many steps per epoch as the real run, so both pay the same epoch ends;
* packed: bincount's data module on a packed folder (memory-mapped uint8 rows, pinned, copied to the
  GPU, augmented and normalised there), channels_last, bf16 autocast;
* jpeg: bincount's JPEG path (PIL decode + per-image transform in loader workers), for contrast.

Eager, and with ``torch.compile``. End to end counts every
step from the warm-up on, epoch starts included; steady state is the median step. With no GPU,
``--smoke`` runs the eager runs on the CPU with a tiny model (it checks that the code runs; the
figures mean nothing) and a full run is skipped.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch

from benchmarks.clock import StepClock
from benchmarks.common import Batches, Row, Skipped, median, timed
from benchmarks.loader import packed_copy
from bincount.data.datamodule import BinDataModule
from bincount.data.gpu_augment import train_batch_transform
from bincount.data.packed import is_packed, write_packed
from bincount.data.records import read_abid
from bincount.model.counter import CountingModel


def _fit(name: str, model: CountingModel, warmup: int, steps: int, batch: int, cuda: bool, **data) -> dict:
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=cuda,
        callbacks=[clock],
    )
    started = time.perf_counter()
    trainer.fit(model, **data)
    result = {**clock.summary(batch), "wall_s": round(time.perf_counter() - started, 1)}
    if cuda:
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        torch.cuda.reset_peak_memory_stats()
    print(f"  {name}: {result}", file=sys.stderr, flush=True)  # partial results survive a later failure
    return result


def _data_path_costs(batch: int, size: int, device: str) -> dict:
    """Milliseconds per batch of the packed path's device-side work: the uint8 copy from pinned
    memory, and the augmentation."""
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8).permute(0, 3, 1, 2).pin_memory()
    on_device, augment = x.to(device), train_batch_transform(size)
    for _ in range(3):
        augment(on_device)
    return {
        "copy_to_device_ms": round(
            median([timed(lambda: x.to(device, non_blocking=True), device) for _ in range(10)]) * 1e3, 2
        ),
        "augment_ms": round(median([timed(lambda: augment(on_device), device) for _ in range(10)]) * 1e3, 2),
    }


def run(data: Path | None, cache: Path, smoke: bool) -> list[Row | Skipped]:
    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        return [Skipped("gpu end-to-end", "no GPU on this machine")]
    if data is None or not (Path(data) / "metadata").is_dir() and not is_packed(data):
        return [Skipped("gpu end-to-end", f"no ABID folder or packed folder at {data} (pass --gpu-data DIR)")]
    backbone, size, batch, warmup, steps = (
        ("resnet50", 224, 256, 15, 60) if cuda and not smoke else ("resnet10t", 32, 8, 2, 3)
    )
    workers = min(8, len(os.sched_getaffinity(0))) if cuda else 1
    started = time.perf_counter()
    if is_packed(data):
        packed = Path(data)
    elif smoke:  # a few images per count are enough to check that the code runs
        packed = write_packed(read_abid(data, check_images=False)[0][:300], cache / "smoke-gpu", size)
    else:
        packed = packed_copy(Path(data), cache, size)
    pack_s = round(time.perf_counter() - started, 1)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3, fused=cuda)
    model = functools.partial(CountingModel, backbone, image_size=size, channels_last=True, optimizer=optimizer)
    data_module = functools.partial(
        BinDataModule,
        image_size=size,
        batch_size=batch,
        num_workers=workers,
        pin_memory=cuda,
        check_images=False,
        limit_per_class=12 if smoke else None,
    )
    probe = data_module(str(packed))
    probe.setup("fit")
    per_epoch = len(probe.splits["train"]) // batch  # training drops the last partial batch
    device = "cuda" if cuda else "cpu"
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    synthetic = Batches([(x, torch.randint(0, 5, (batch,), device=device))] * per_epoch)

    results = {}
    for compiled in (False, True) if cuda else (False,):  # compiling on a CPU smoke run would take minutes
        tag = "compiled" if compiled else "eager"
        runs = {
            f"synthetic {tag}": {"train_dataloaders": synthetic},
            f"packed {tag}": {"datamodule": data_module(str(packed))},
        }
        if not compiled and not is_packed(data):
            runs["jpeg eager"] = {"datamodule": data_module(str(data))}
        for name, source in runs.items():
            results[name] = _fit(name, model(compile=compiled), warmup, steps, batch, cuda, **source)
    details = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (smoke)",
        "backbone": backbone,
        "image_size": size,
        "batch_size": batch,
        "warmup_steps": warmup,
        "measured_steps": steps,
        "steps_per_epoch": per_epoch,
        "loader_workers": workers,
        "precision": "bf16-mixed" if cuda else "32-true",
        "channels_last": True,
        "pack_s": pack_s,
        "runs": results,
        "data_path_costs": _data_path_costs(batch, size, device) if cuda else {},
    }
    target = ["ratio >= 0.9", "candidate >= 3000"] if cuda and not smoke else []
    rows: list[Row | Skipped] = []
    for name, ceiling in (("packed eager", "synthetic eager"), ("packed compiled", "synthetic compiled")):
        if name in results:
            rows.append(
                Row(
                    f"gpu {backbone} {size}px",
                    "train images/s",
                    ceiling,
                    results[ceiling]["images_per_s"],
                    name,
                    results[name]["images_per_s"],
                    target,
                    details,
                )
            )
    if "jpeg eager" in results:
        rows.append(
            Row(
                f"gpu {backbone} {size}px",
                "train images/s",
                "synthetic eager",
                results["synthetic eager"]["images_per_s"],
                "jpeg eager",
                results["jpeg eager"]["images_per_s"],
                [],
                details,
            )
        )
    return rows
