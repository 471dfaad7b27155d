"""The system monitor: a Lightning callback that samples CPU, memory, disk, network and GPU use in a
background thread while a run trains and tests, and times every training step's wait for data against
its compute. It writes ``utilization.csv`` (one row per sample) and ``utilization.json`` (the machine,
peak and mean per resource, time per epoch and where it went) into the run directory, which is what
``bincount cost-report`` reads."""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import lightning as L
import psutil

log = logging.getLogger(__name__)

CSV_NAME = "utilization.csv"
JSON_NAME = "utilization.json"
GB = 1024 ** 3
MB = 1024 ** 2

# column -> (what it is, unit); the cost report summarizes and plots these.
RESOURCES = {
    "cpu_percent": ("CPU, whole machine", "%"),
    "proc_cpu_cores": ("CPU cores busy with this run (process and its loader workers)", "cores"),
    "mem_percent": ("memory, whole machine", "%"),
    "mem_used_gb": ("memory used, whole machine", "GiB"),
    "proc_rss_gb": ("memory of this run (resident, with loader workers, at most the machine's used)", "GiB"),
    "disk_percent": ("disk space used (run directory's volume)", "%"),
    "disk_read_mbs": ("disk reads", "MiB/s"),
    "disk_write_mbs": ("disk writes", "MiB/s"),
    "net_recv_mbs": ("network in", "MiB/s"),
    "net_sent_mbs": ("network out", "MiB/s"),
    "gpu_percent": ("GPU compute, mean over GPUs", "%"),
    "gpu_mem_percent": ("GPU memory, fullest GPU", "%"),
    "gpu_mem_gb": ("GPU memory used, all GPUs", "GiB"),
}
COLUMNS = ("t", "phase", *RESOURCES)


class _Gpus:
    """NVIDIA GPUs through NVML (nvidia-ml-py) where a driver is present; memory only through
    torch.cuda where NVML is missing; nothing on machines without a GPU."""

    def __init__(self):
        self.nvml, self.handles, self.torch_devices = None, [], []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self._visible(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no driver, no library, no GPU: all mean "no NVML here"
            self.nvml = None
            import torch

            if torch.cuda.is_available():
                self.torch_devices = list(range(torch.cuda.device_count()))

    @staticmethod
    def _visible(count: int) -> list[int]:
        ids = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        wanted = [int(i) for i in ids.split(",") if i.strip().isdigit()]
        return [i for i in wanted if i < count] if wanted else list(range(count))

    def describe(self) -> list[dict]:
        if self.nvml:
            out = []
            for h in self.handles:
                name = self.nvml.nvmlDeviceGetName(h)
                out.append({"name": name.decode() if isinstance(name, bytes) else name,
                            "mem_total_gb": round(self.nvml.nvmlDeviceGetMemoryInfo(h).total / GB, 2)})
            return out
        import torch

        return [{"name": torch.cuda.get_device_name(i),
                 "mem_total_gb": round(torch.cuda.get_device_properties(i).total_memory / GB, 2)}
                for i in self.torch_devices]

    def sample(self) -> dict:
        if self.nvml and self.handles:
            util = [self.nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles]
            mem = [self.nvml.nvmlDeviceGetMemoryInfo(h) for h in self.handles]
            return {"gpu_percent": sum(util) / len(util),
                    "gpu_mem_percent": max(100.0 * m.used / m.total for m in mem),
                    "gpu_mem_gb": sum(m.used for m in mem) / GB}
        if self.torch_devices:
            import torch

            free_total = [torch.cuda.mem_get_info(i) for i in self.torch_devices]
            return {"gpu_percent": None,
                    "gpu_mem_percent": max(100.0 * (t - f) / t for f, t in free_total),
                    "gpu_mem_gb": sum(t - f for f, t in free_total) / GB}
        return {"gpu_percent": None, "gpu_mem_percent": None, "gpu_mem_gb": None}


def instance_type() -> str | None:
    """The SageMaker instance type when running in a SageMaker training container, else None."""
    if os.environ.get("SM_CURRENT_INSTANCE_TYPE"):
        return os.environ["SM_CURRENT_INSTANCE_TYPE"]
    config = Path("/opt/ml/input/config/resourceconfig.json")
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("current_instance_type")
        except (OSError, ValueError):
            return None
    return None


def describe_machine(gpus: _Gpus | None = None) -> dict:
    gpus = gpus or _Gpus()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(logical=True),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "mem_total_gb": round(psutil.virtual_memory().total / GB, 2),
        "gpus": gpus.describe(),
        "instance_type": instance_type(),
    }


class Sampler:
    """Samples the machine every ``interval_s`` seconds in a daemon thread until stopped."""

    def __init__(self, disk_path: str | Path = ".", interval_s: float = 1.0):
        self.disk_path, self.interval_s = str(disk_path), float(interval_s)
        self.gpus = _Gpus()
        self.rows: list[dict] = []
        self.phase = "setup"
        self._origin = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._me = psutil.Process()
        self._procs: dict[int, psutil.Process] = {}
        self._last_io: tuple | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        psutil.cpu_percent(interval=None)  # the first call only sets the reference point
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bincount-system-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self.running:
            return
        self._stop.set()
        self._thread.join(timeout=5 * self.interval_s + 5)
        # one last row, so even a run shorter than the interval has one (a row right after the loop's
        # last would measure CPU over a few microseconds: zero)
        if not self.rows or time.monotonic() - self._origin - self.rows[-1]["t"] > self.interval_s / 2:
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a failed sample must never stop training; say so once a while
                log.debug("system monitor: sample failed", exc_info=True)

    def _process_tree(self) -> tuple[float, float]:
        """CPU cores busy and resident memory of this process and its children (loader workers)."""
        alive = [self._me]
        try:
            alive += self._me.children(recursive=True)
        except psutil.Error:
            pass
        cores, rss = 0.0, 0
        for p in alive:
            proc = self._procs.setdefault(p.pid, p)  # cpu_percent needs the same object across calls
            try:
                cores += proc.cpu_percent(interval=None) / 100.0
                rss += proc.memory_info().rss
            except psutil.Error:
                self._procs.pop(p.pid, None)
        return cores, rss / GB

    def _io_rates(self, now: float) -> dict:
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        current = (now, disk.read_bytes if disk else 0, disk.write_bytes if disk else 0,
                   net.bytes_recv if net else 0, net.bytes_sent if net else 0)
        last, self._last_io = self._last_io, current
        if last is None or current[0] <= last[0]:
            return {"disk_read_mbs": 0.0, "disk_write_mbs": 0.0, "net_recv_mbs": 0.0, "net_sent_mbs": 0.0}
        dt = current[0] - last[0]
        rate = [max(0.0, (c - p) / dt / MB) for c, p in zip(current[1:], last[1:])]
        return dict(zip(("disk_read_mbs", "disk_write_mbs", "net_recv_mbs", "net_sent_mbs"), rate))

    def sample(self) -> dict:
        now = time.monotonic()
        vm = psutil.virtual_memory()
        cores, rss = self._process_tree()
        used = (vm.total - vm.available) / GB
        # Summed RSS counts twice the pages forked loader workers share with the main process (PSS would
        # not, but reading it costs ~30 ms per torch process); the machine's used memory bounds it.
        row = {"t": round(now - self._origin, 3), "phase": self.phase,
               "cpu_percent": psutil.cpu_percent(interval=None), "proc_cpu_cores": cores,
               "mem_percent": vm.percent, "mem_used_gb": used, "proc_rss_gb": min(rss, used),
               "disk_percent": psutil.disk_usage(self.disk_path).percent, **self._io_rates(now)}
        row.update(self.gpus.sample())
        self.rows.append(row)
        return row


def summarize(rows: list[dict]) -> dict:
    """Peak and mean of every resource column that has values (None where a resource is absent)."""
    out = {}
    for col, (what, unit) in RESOURCES.items():
        values = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
        if values:
            out[col] = {"peak": round(max(values), 3), "mean": round(sum(values) / len(values), 3),
                        "unit": unit, "what": what, "samples": len(values)}
    return out


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "phase":
                r[k] = float(v) if v not in ("", None) else None
    return rows


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
        self._epoch = {"epoch": trainer.current_epoch, "start": now, "steps": 0, "data_s": 0.0,
                       "compute_s": 0.0, "val_s": 0.0}
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
        return {"epochs": self.epochs, "steps": steps, **{k: round(v, 3) for k, v in total.items()},
                "test_s": round(self.test_s, 3),
                "data_share": round(total["data_s"] / busy, 4) if busy else None,
                "step_s": round(busy / steps, 4) if steps else None}

    def write(self, node_rank: int = 0) -> Path:
        suffix = "" if node_rank == 0 else f"-node{node_rank}"
        rows = self.sampler.rows if self.sampler else []
        write_csv(rows, self.output_dir / CSV_NAME.replace(".csv", f"{suffix}.csv"))
        out = self.output_dir / JSON_NAME.replace(".json", f"{suffix}.json")
        out.write_text(json.dumps({
            "source": "bincount system monitor",
            "interval_s": self.interval_s,
            "duration_s": rows[-1]["t"] if rows else 0.0,
            "machine": self.machine,
            "summary": summarize(rows),
            "timing": self.timing(),
        }, indent=2))
        return out
