"""Sampling a machine: CPU, memory, disk, network and GPU use, read in a background thread, and the
``utilization.csv`` rows that hold them. The callback that runs a sampler while a run trains is
``bincount.callbacks.system_monitor.SystemMonitor``; ``bincount cost-report`` reads what it wrote."""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import re
import threading
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

GB = 1024**3
MB = 1024**2

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
                out.append(
                    {
                        "name": name.decode() if isinstance(name, bytes) else name,
                        "mem_total_gb": round(self.nvml.nvmlDeviceGetMemoryInfo(h).total / GB, 2),
                    }
                )
            return out
        import torch

        return [
            {
                "name": torch.cuda.get_device_name(i),
                "mem_total_gb": round(torch.cuda.get_device_properties(i).total_memory / GB, 2),
            }
            for i in self.torch_devices
        ]

    def sample(self) -> dict:
        if self.nvml and self.handles:
            util = [self.nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles]
            mem = [self.nvml.nvmlDeviceGetMemoryInfo(h) for h in self.handles]
            return {
                "gpu_percent": sum(util) / len(util),
                "gpu_mem_percent": max(100.0 * m.used / m.total for m in mem),
                "gpu_mem_gb": sum(m.used for m in mem) / GB,
            }
        if self.torch_devices:
            import torch

            free_total = [torch.cuda.mem_get_info(i) for i in self.torch_devices]
            return {
                "gpu_percent": None,
                "gpu_mem_percent": max(100.0 * (t - f) / t for f, t in free_total),
                "gpu_mem_gb": sum(t - f for f, t in free_total) / GB,
            }
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


def _cpuinfo() -> str:
    """/proc/cpuinfo (Linux); empty elsewhere."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str | None:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor" (Linux; None elsewhere)."""
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")]
    return names[0] if names else None


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX-512 BF16; Linux only, False elsewhere)."""
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", _cpuinfo()) is not None


def describe_machine(gpus: _Gpus | None = None) -> dict:
    gpus = gpus or _Gpus()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_bf16": cpu_bf16(),
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
        # one last row, so even a run (or a phase, e.g. a test of a few images) shorter than the interval has
        # one; otherwise not right after the loop's last row, which would measure CPU over microseconds
        if (
            not self.rows
            or self.rows[-1]["phase"] != self.phase
            or time.monotonic() - self._origin - self.rows[-1]["t"] > self.interval_s / 2
        ):
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
        current = (
            now,
            disk.read_bytes if disk else 0,
            disk.write_bytes if disk else 0,
            net.bytes_recv if net else 0,
            net.bytes_sent if net else 0,
        )
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
        row = {
            "t": round(now - self._origin, 3),
            "phase": self.phase,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "proc_cpu_cores": cores,
            "mem_percent": vm.percent,
            "mem_used_gb": used,
            "proc_rss_gb": min(rss, used),
            "disk_percent": psutil.disk_usage(self.disk_path).percent,
            **self._io_rates(now),
        }
        row.update(self.gpus.sample())
        self.rows.append(row)
        return row


def summarize(rows: list[dict]) -> dict:
    """Peak and mean of every resource column that has values (None where a resource is absent)."""
    out = {}
    for col, (what, unit) in RESOURCES.items():
        values = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
        if values:
            out[col] = {
                "peak": round(max(values), 3),
                "mean": round(sum(values) / len(values), 3),
                "unit": unit,
                "what": what,
                "samples": len(values),
            }
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
