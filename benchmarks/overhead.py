"""Framework overhead: training steps/s of the LightningModule under the Trainer versus a plain
PyTorch loop doing the same work (forward, loss, the same metric update, backward, optimizer step)
with the same model, batch and data: batches already in memory, so only the frameworks differ.
And on the CPU: the same Trainer steps in fp32 and in bf16 autocast, with and without an exponential
moving average of the weights (what the quick start keeps), and in the default and the channels_last memory
layout (what the quick start trains in)."""

from __future__ import annotations

import copy
import time

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks.clock import StepClock
from benchmarks.common import Batches, Row, interleaved, median
from bincount.model.counter import CountingModel
from bincount.monitor.system import cpu_bf16


def lightning_steps(
    model: CountingModel, data: Batches, steps: int, warmup: int, precision: str = "32-true", callbacks: tuple = ()
) -> float:
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, clock],
    )
    trainer.fit(model, train_dataloaders=data)
    return median(clock.step_seconds())


def plain_steps(model: CountingModel, data: Batches, steps: int, warmup: int) -> float:
    """What training_step and the Trainer do, written out by hand."""
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    metrics = model.metrics["train_split"]
    model.train()
    starts, done = [], 0
    while done < steps:
        for x, y in data:
            starts.append(time.perf_counter())
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=model.hparams.label_smoothing)
            metrics.update(logits.argmax(1), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    starts.append(time.perf_counter())
    metrics.reset()
    starts = starts[warmup:]
    return median([b - a for a, b in zip(starts, starts[1:])])


def model_and_batches(
    backbone: str, size: int, batch: int, steps: int, channels_last: bool = False
) -> tuple[CountingModel, Batches]:
    """A counter as the quick start trains it (AdamW, label smoothing) and one epoch of distinct random batches:
    no epoch boundary (metric compute) inside the measured steps."""
    torch.manual_seed(0)
    optimizer = lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)  # noqa: E731
    model = CountingModel(
        backbone, image_size=size, label_smoothing=0.1, optimizer=optimizer, channels_last=channels_last
    )
    data = Batches([(torch.randn(batch, 3, size, size), torch.randint(0, 5, (batch,))) for _ in range(steps)])
    return model, data


def run(smoke: bool) -> list[Row]:
    """The first quick start's model and batch (ResNet-18, 96 px, 32 images, AdamW), and today's (ResNet-10-T)
    in fp32 and bf16 autocast."""
    backbone, size, batch, steps, warmup, rounds = (
        ("resnet10t", 32, 8, 6, 2, 1) if smoke else ("resnet18", 96, 32, 25, 5, 4)
    )
    model, data = model_and_batches(backbone, size, batch, steps)
    times = interleaved(
        {
            "plain": lambda: plain_steps(copy.deepcopy(model), data, steps, warmup),
            "lightning": lambda: lightning_steps(copy.deepcopy(model), data, steps, warmup),
        },
        rounds,
    )
    plain, lightning = batch / median(times["plain"]), batch / median(times["lightning"])
    details = {
        "backbone": backbone,
        "image_size": size,
        "batch_size": batch,
        "steps_per_round": steps,
        "warmup_steps": warmup,
        "step_seconds": times,
    }
    return [precision_row(smoke), weight_averaging_row(smoke), memory_format_row(smoke)] + [
        Row(
            "trainer overhead",
            "train images/s",
            "plain PyTorch loop",
            plain,
            "Lightning Trainer",
            lightning,
            ["ratio >= 0.97"],
            details,
        )
    ]


def precision_row(smoke: bool) -> Row:
    """The quick start's model and batch (ResNet-10-T, 96 px, 32 images) under the Trainer, fp32 against bf16
    autocast: what ``${bincount.auto_precision:cpu}`` picks where the CPU has bf16 instructions."""
    size, batch, steps, warmup, rounds = (32, 8, 6, 2, 1) if smoke else (96, 32, 25, 5, 4)
    model, data = model_and_batches("resnet10t", size, batch, steps)
    times = interleaved(
        {
            precision: lambda precision=precision: lightning_steps(copy.deepcopy(model), data, steps, warmup, precision)
            for precision in ("32-true", "bf16-mixed")
        },
        rounds,
    )
    fp32, bf16 = (batch / median(times[p]) for p in ("32-true", "bf16-mixed"))
    details = {"backbone": "resnet10t", "image_size": size, "batch_size": batch, "cpu_bf16": cpu_bf16()}
    return Row(
        "CPU precision, quick start's model",
        "train images/s",
        "fp32",
        fp32,
        "bf16 autocast",
        bf16,
        [],
        {**details, "steps_per_round": steps, "warmup_steps": warmup, "step_seconds": times},
    )


def quick_start_details(size: int, batch: int, precision: str, steps: int, warmup: int, times: dict) -> dict:
    """What a row timing the quick start's model records beside its figures."""
    return {
        "backbone": "resnet10t",
        "image_size": size,
        "batch_size": batch,
        "precision": precision,
        "steps_per_round": steps,
        "warmup_steps": warmup,
        "step_seconds": times,
    }


def weight_averaging_row(smoke: bool) -> Row:
    """The quick start's Trainer steps (ResNet-10-T, 96 px, 32 images, bf16 autocast where the CPU has it) without
    and with its moving average of the weights (bincount.callbacks.ema.EMA) updated after every step."""
    from bincount.callbacks.ema import EMA

    size, batch, steps, warmup, rounds = (32, 8, 6, 2, 1) if smoke else (96, 32, 25, 5, 4)
    precision = "bf16-mixed" if cpu_bf16() else "32-true"
    model, data = model_and_batches("resnet10t", size, batch, steps)

    def timed(ema: bool) -> float:
        callbacks = (EMA(decay=0.998),) if ema else ()
        return lightning_steps(copy.deepcopy(model), data, steps, warmup, precision, callbacks)

    times = interleaved({"plain": lambda: timed(False), "ema": lambda: timed(True)}, rounds)
    plain, ema = (batch / median(times[k]) for k in ("plain", "ema"))
    return Row(
        "weight averaging, quick start's model",
        "train images/s",
        "no average",
        plain,
        "EMA of the weights (decay 0.998, every step)",
        ema,
        [],
        quick_start_details(size, batch, precision, steps, warmup, times),
    )


def memory_format_row(smoke: bool) -> Row:
    """The quick start's Trainer steps as it trains on this CPU (ResNet-10-T, 32 images, bf16 autocast at 96 px
    where the CPU has bf16 instructions, fp32 at 64 px elsewhere) in the default (NCHW) memory layout against
    channels_last (NHWC, ``model.channels_last``), which oneDNN's convolutions prefer on x86."""
    precision, size = ("bf16-mixed", 96) if cpu_bf16() else ("32-true", 64)
    size, batch, steps, warmup, rounds = (32, 8, 6, 2, 1) if smoke else (size, 32, 25, 5, 4)
    models = {}
    for layout in ("nchw", "channels_last"):
        models[layout], data = model_and_batches("resnet10t", size, batch, steps, layout == "channels_last")
    times = interleaved(
        {
            layout: lambda layout=layout: lightning_steps(copy.deepcopy(models[layout]), data, steps, warmup, precision)
            for layout in models
        },
        rounds,
    )
    nchw, last = (batch / median(times[k]) for k in models)
    return Row(
        "memory layout, quick start's model",
        "train images/s",
        "default (NCHW)",
        nchw,
        "channels_last",
        last,
        [],
        quick_start_details(size, batch, precision, steps, warmup, times),
    )
