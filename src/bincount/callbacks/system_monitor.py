"""The system monitor: a Lightning callback that samples CPU, memory, disk, network and GPU use in a
background thread (``bincount.monitor.system.Sampler``) while a run trains and tests, and times every
training step's wait for data against its compute. It writes ``utilization.csv`` (one row per sample) and
``utilization.json`` (the machine, peak and mean per resource, time per epoch and where it went) into the
run directory, which is what ``bincount cost-report`` reads."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L

from bincount.layout import UTILIZATION_CSV, UTILIZATION_JSON
from bincount.monitor.system import Sampler, describe_machine, summarize, write_csv


class SystemMonitor(L.Callback):
    """Samples the machine during fit and test (rank 0 of each node) and times each training step:
    ``data`` is the wait between one step's end and the next step's start (the loader), ``compute`` is
    forward, backward and optimizer step (CUDA is synchronized at step end so queued GPU work is not
    mistaken for waiting on data)."""

    def __init__(self, output_dir: str, interval_s: float = 1.0, sync_cuda: bool = True):
        self.output_dir = Path(output_dir)
        self.interval_s, self.sync_cuda = float(interval_s), bool(sync_cuda)
        self.sampler: Sampler | None = None
        self.machine: dict = {}
        self.epochs: list[dict] = []
        self.test_s = 0.0
        self._epoch: dict | None = None
        self._last = self._batch_start = self._val_start = self._test_start = 0.0
        self._cuda = False
        # Sampling starts here, not in setup(): train() builds the callbacks just before the data module
        # reads and checks the images, which Lightning does before any callback hook, and which is paid for.
        if os.environ.get("LOCAL_RANK", "0") == "0":  # DDP workers Lightning starts carry LOCAL_RANK
            self._start("setup")

    def _now(self) -> float:
        return time.perf_counter()

    # -- sampling -------------------------------------------------------------------------------
    def _start(self, phase: str) -> None:
        if self.sampler is None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.sampler = Sampler(self.output_dir, self.interval_s)
            self.machine = describe_machine(self.sampler.gpus)
        self.sampler.phase = phase
        self.sampler.start()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._cuda = self.sync_cuda and pl_module.device.type == "cuda"
        if trainer.local_rank != 0:
            if self.sampler is not None:
                self.sampler.stop()
                self.sampler = None
            return
        self._start(stage)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.sampler is None:
            return
        self.sampler.stop()
        self.write(trainer.node_rank)

    def _set_phase(self, phase: str) -> None:
        if self.sampler is not None:
            self.sampler.phase = phase

    # -- step timing ----------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set_phase("train")
        now = self._now()
        self._epoch = {
            "epoch": trainer.current_epoch,
            "start": now,
            "steps": 0,
            "data_s": 0.0,
            "compute_s": 0.0,
            "val_s": 0.0,
        }
        self._last = now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = self._now()
        if self._epoch is not None:
            self._epoch["data_s"] += now - self._last
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        now = self._now()
        if self._epoch is not None:
            self._epoch["compute_s"] += now - self._batch_start
            self._epoch["steps"] += 1
        self._last = now

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._set_phase("val")
            self._val_start = self._now()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        now = self._now()
        if self._epoch is not None:
            self._epoch["val_s"] += now - self._val_start
        self._last = now  # a mid-epoch validation is not time spent waiting for training data
        self._set_phase("train")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch is None:
            return
        e, self._epoch = self._epoch, None
        e["total_s"] = self._now() - e.pop("start")
        e["other_s"] = max(0.0, e["total_s"] - e["data_s"] - e["compute_s"] - e["val_s"])
        self.epochs.append({k: round(v, 3) if isinstance(v, float) else v for k, v in e.items()})

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._set_phase("test")
        self._test_start = self._now()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test_s += self._now() - self._test_start

    # -- output ---------------------------------------------------------------------------------
    def timing(self) -> dict:
        total = {k: sum(e[k] for e in self.epochs) for k in ("total_s", "data_s", "compute_s", "val_s", "other_s")}
        steps = sum(e["steps"] for e in self.epochs)
        busy = total["data_s"] + total["compute_s"]
        return {
            "epochs": self.epochs,
            "steps": steps,
            **{k: round(v, 3) for k, v in total.items()},
            "test_s": round(self.test_s, 3),
            "data_share": round(total["data_s"] / busy, 4) if busy else None,
            "step_s": round(busy / steps, 4) if steps else None,
        }

    def write(self, node_rank: int = 0) -> Path:
        suffix = "" if node_rank == 0 else f"-node{node_rank}"
        rows = self.sampler.rows if self.sampler else []
        write_csv(rows, self.output_dir / UTILIZATION_CSV.replace(".csv", f"{suffix}.csv"))
        out = self.output_dir / UTILIZATION_JSON.replace(".json", f"{suffix}.json")
        out.write_text(
            json.dumps(
                {
                    "source": "bincount system monitor",
                    "interval_s": self.interval_s,
                    "duration_s": rows[-1]["t"] if rows else 0.0,
                    "machine": self.machine,
                    "summary": summarize(rows),
                    "timing": self.timing(),
                },
                indent=2,
            )
        )
        return out
