"""What every benchmark shares: result rows (a candidate against a baseline measured side by side in
the same run), interleaved timing, the machine's description, and the table. Lightning stays out (the
Trainer benchmarks' step clock is in benchmarks/clock.py), so a command that only checks its arguments
starts in a second or two."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from bincount.monitor.system import cpu_bf16, cpu_model


@dataclass
class Row:
    """One figure: ``candidate`` against ``baseline``, both measured in this run. ``ratio`` is
    candidate / baseline. Each target reads ``ratio >= 5``, ``ratio <= 0.6`` or ``candidate >= 3000``."""

    benchmark: str
    metric: str
    baseline: str
    baseline_value: float
    candidate: str
    candidate_value: float
    targets: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.candidate_value / self.baseline_value if self.baseline_value else float("nan")

    @property
    def met(self) -> bool | None:
        if not self.targets:
            return None
        results = []
        for target in self.targets:
            subject, op, value = target.split()
            got = self.ratio if subject == "ratio" else self.candidate_value
            results.append(got >= float(value) if op == ">=" else got <= float(value))
        return all(results)

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4), "met": self.met}


@dataclass
class Skipped:
    benchmark: str
    reason: str

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "skipped": self.reason}


def interleaved(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each measure once per round, in turn (A B C A B C ...), so that load from other processes
    on a shared machine falls on all of them alike; returns every round's value per measure."""
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            values[name].append(measure())
    return values


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Batches:
    """The same in-memory batches every epoch (an iterable the Trainer takes as a loader)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        # with it, bf16 autocast (trainer.precision=bf16-mixed; auto_precision's pick) trains 1.5x faster than fp32
        "cpu_bf16": cpu_bf16(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # a seed's run is repeatable within one install, not across them: the quick start's seed 1 tested 37.0 %
        # in one install and 34.1 % in a later one with the same recipe (JPEG decoding, initialisation, sampling)
        "packages": {p: _version(p) for p in ("lightning", "timm", "torchvision", "pillow", "numpy")},
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(rows: list[Row | Skipped]) -> str:
    """A Markdown table: it reads in a terminal and pastes into the README."""
    lines = ["| benchmark | metric | baseline | candidate | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if isinstance(r, Skipped):
            lines.append(f"| {r.benchmark} | skipped: {r.reason} | | | | | |")
            continue
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        lines.append(
            f"| {r.benchmark} | {r.metric} | {r.baseline}: {_fmt(r.baseline_value)} | "
            f"{r.candidate}: {_fmt(r.candidate_value)} | {r.ratio:.2f}x | {', '.join(r.targets)} | {met} |"
        )
    return "\n".join(lines)
