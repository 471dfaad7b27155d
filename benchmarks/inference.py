"""Inference on the CPU: latency (p50, p99) at batch 1 and throughput at batch 32 of the counting
network through bincount's serving predictors: PyTorch eager, ONNX Runtime (the exported graph), and
the eager predictor's network under ``torch.compile``. The backends take turns, in blocks of calls."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import timm
import torch

from benchmarks.common import Row, median, percentile
from bincount.serve.export import export_onnx
from bincount.serve.predictor import OnnxPredictor, TorchPredictor


def _predictors(backbone: str, size: int, batches: tuple[int, int], folder: Path, threads: int) -> tuple[dict, dict]:
    classes = [1, 2, 3, 4, 5]
    hparams = {"backbone": backbone, "classes": classes, "image_size": size}
    state = timm.create_model(backbone, num_classes=len(classes)).state_dict()
    eager = TorchPredictor(hparams, state)
    onnx = OnnxPredictor(hparams, export_onnx(eager, folder / "model.onnx"), threads)
    compiled = TorchPredictor(hparams, state)
    compiled.model = torch.compile(compiled.model)
    predictors = {"eager": eager, "onnxruntime": onnx, "compiled": compiled}
    setup = {}
    for name, p in predictors.items():  # first calls: compilation, ORT's graph optimisation
        start = time.perf_counter()
        for n in batches:
            p.logits(torch.randn(n, 3, size, size))
        setup[name] = round(time.perf_counter() - start, 2)
    return predictors, setup


def _latencies(predictors: dict, x: torch.Tensor, blocks: int, per_block: int) -> dict[str, list[float]]:
    """Seconds per call, in blocks of calls per backend, the backends taking turns. The first call
    of a block is dropped: the previous backend's thread pool may still be spinning on the cores."""
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(blocks):
        for name, p in predictors.items():
            for call in range(per_block + 1):
                start = time.perf_counter()
                p.logits(x)
                if call:
                    times[name].append(time.perf_counter() - start)
    return times


def run(smoke: bool, threads: int = 0) -> list[Row]:
    torch.manual_seed(0)
    # a smoke run uses batch 1 twice: one compilation instead of two
    backbone, size, big, blocks_1, blocks_big = ("resnet10t", 32, 1, 1, 1) if smoke else ("resnet50", 224, 32, 6, 3)
    with tempfile.TemporaryDirectory() as folder:
        predictors, setup = _predictors(backbone, size, (1, big), Path(folder), threads)
        one = _latencies(predictors, torch.randn(1, 3, size, size), blocks_1, per_block=10)
        many = _latencies(predictors, torch.randn(big, 3, size, size), blocks_big, per_block=2)
    details = {
        "backbone": backbone,
        "image_size": size,
        "threads": torch.get_num_threads(),
        "first_calls_s": setup,
        "batch1_calls": len(one["eager"]),
        f"batch{big}_calls": len(many["eager"]),
    }
    rows = []
    for name in ("onnxruntime", "compiled"):
        for q in (50, 99):
            rows.append(
                Row(
                    f"inference batch 1 p{q}",
                    "latency ms",
                    "eager",
                    percentile(one["eager"], q) * 1e3,
                    name,
                    percentile(one[name], q) * 1e3,
                    ["ratio <= 0.6"] if q == 50 else [],
                    details,
                )
            )
    for name in ("onnxruntime", "compiled"):
        rows.append(
            Row(
                f"inference batch {big}",
                "images/s",
                "eager",
                big / median(many["eager"]),
                name,
                big / median(many[name]),
                [],
                details,
            )
        )
    return rows
