"""Sizing a run: what it used (peak, mean and p95 per resource, from the system monitor's
``utilization.csv``/``.json`` and ``metrics.json``) and the cheapest SageMaker training instance of the price
table that offers that with headroom. The price table ships with the configs (conf/cost/prices.yaml);
bincount.reports.cost_report renders the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from bincount.config import config_file
from bincount.errors import BincountError
from bincount.layout import METRICS, UTILIZATION_CSV, UTILIZATION_JSON
from bincount.monitor.system import read_csv, summarize


def default_prices() -> Path:
    """The price table shipped with bincount (conf/cost/prices.yaml, package data)."""
    return config_file("cost", "prices.yaml")


def load_prices(path: str | Path | None = None) -> dict:
    path = Path(path) if path else default_prices()
    if not path.is_file():
        raise BincountError(f"--prices: no price table at {path}; pass --prices FILE (see conf/cost/prices.yaml)")
    table = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not table.get("instances"):
        raise BincountError(f"--prices: {path} lists no instances under `instances:`")
    return table


def load_run(run: str | Path) -> dict:
    run = Path(run)
    if not (run / UTILIZATION_CSV).is_file():
        raise BincountError(
            f"{run}: no {UTILIZATION_CSV}; train with the system monitor on (callbacks=default), "
            "or read a SageMaker job's metrics with --sagemaker-job NAME"
        )
    info = json.loads((run / UTILIZATION_JSON).read_text()) if (run / UTILIZATION_JSON).is_file() else {}
    metrics = json.loads((run / METRICS).read_text()) if (run / METRICS).is_file() else {}
    return {"dir": run, "rows": read_csv(run / UTILIZATION_CSV), "info": info, "metrics": metrics}


# -- sizing ---------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    k = (len(values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def needs(rows: list[dict], summary: dict, machine: dict, rules: dict) -> dict:
    """What the run used, and so what an instance must offer (times the headroom)."""
    headroom = float(rules.get("headroom", 1.3))
    cpus = machine.get("cpus_usable") or machine.get("cpus") or 1
    if any(r.get("proc_cpu_cores") is not None for r in rows):
        cores = [r["proc_cpu_cores"] for r in rows if r.get("proc_cpu_cores") is not None]
    else:  # CloudWatch gives the machine only; a SageMaker instance runs nothing else
        cores = [r["cpu_percent"] * cpus / 100 for r in rows if r.get("cpu_percent") is not None]
    cores_used = _percentile(cores, float(rules.get("cpu_percentile", 95)))
    own = any(r.get("proc_cpu_cores") is not None for r in rows)
    machine_busy = _percentile([r["cpu_percent"] for r in rows if r.get("cpu_percent") is not None], 95)
    mem_key = "proc_rss_gb" if "proc_rss_gb" in summary else "mem_used_gb"
    mem_used = summary.get(mem_key, {}).get("peak", 0.0)
    gpu_busy = summary.get("gpu_percent", {}).get("mean", 0.0)
    gpu_mem_used = summary.get("gpu_mem_gb", {}).get("peak", 0.0)
    n_gpus = len(machine.get("gpus") or [])
    uses_gpu = n_gpus > 0 and (
        gpu_busy > float(rules.get("gpu_min_percent", 5)) or ("gpu_percent" not in summary and gpu_mem_used > 0.5)
    )
    return {
        "cores_used": round(cores_used, 2),
        "cpus_available": cpus,
        "cpu_bound": cores_used >= 0.9 * cpus,
        # other processes kept the machine's CPUs busy while this run got less than all of them
        "contended": own and machine_busy >= 90 and cores_used < 0.9 * cpus,
        "mem_used_gb": round(mem_used, 2),
        "uses_gpu": uses_gpu,
        "gpus": n_gpus if uses_gpu else 0,
        "gpu_mem_used_gb": round(gpu_mem_used, 2),
        "vcpus": max(int(rules.get("min_vcpus", 2)), math.ceil(cores_used * headroom)),
        "mem_gb": round(mem_used * headroom, 2),
        "gpu_mem_gb": round(gpu_mem_used / max(n_gpus, 1) * headroom, 2) if uses_gpu else 0.0,
        "headroom": headroom,
    }


def candidates(instances: dict, need: dict, seconds: float) -> list[dict]:
    """Every instance of the table with its cost for this run and why it does or does not fit."""
    out = []
    for name, spec in instances.items():
        short = []
        if spec["vcpus"] < need["vcpus"]:
            short.append(f"{spec['vcpus']} vCPU < {need['vcpus']}")
        if spec["mem_gb"] < need["mem_gb"]:
            short.append(f"{spec['mem_gb']} GiB < {need['mem_gb']}")
        if need["uses_gpu"] and spec["gpus"] < need["gpus"]:
            short.append("no GPU" if not spec["gpus"] else f"{spec['gpus']} GPU < {need['gpus']}")
        if need["uses_gpu"] and spec["gpus"] and spec["gpu_mem_gb"] < need["gpu_mem_gb"]:
            short.append(f"{spec['gpu_mem_gb']} GiB GPU memory < {need['gpu_mem_gb']}")
        out.append(
            {
                "instance": name,
                **spec,
                "usd_per_run": round(spec["usd_per_hour"] * seconds / 3600, 5),
                "fits": not short,
                "short_of": "; ".join(short),
            }
        )
    return sorted(out, key=lambda c: (c["usd_per_hour"], c["instance"]))


def build_report(run: str | Path, prices: str | Path | None = None, current: str | None = None) -> dict:
    """The figures of the cost report: utilization, time per epoch, needs and every instance's cost."""
    data = load_run(run)
    table = load_prices(prices)
    info, metrics, rows = data["info"], data["metrics"], data["rows"]
    machine = info.get("machine", {})
    summary = summarize(rows)
    for col, peak in (info.get("peaks") or {}).items():  # CloudWatch per-minute maxima beat averaged rows
        if col in summary:
            summary[col]["peak"] = max(summary[col]["peak"], peak)
    for col in summary:
        values = [r[col] for r in rows if r.get(col) is not None]
        summary[col]["p95"] = round(_percentile(values, 95), 3)
    seconds = float(info.get("billable_s") or metrics.get("seconds") or info.get("duration_s") or 0.0)
    need = needs(rows, summary, machine, table)
    ranked = candidates(table["instances"], need, seconds)
    fitting = [c for c in ranked if c["fits"]]
    current = current or machine.get("instance_type")
    current_row = next((c for c in ranked if c["instance"] == current), None)
    timing = info.get("timing") or {}
    report = {
        "run": str(data["dir"]),
        "seconds": seconds,
        "seconds_from": "billable_s" if info.get("billable_s") else (METRICS if metrics.get("seconds") else "monitor"),
        "epochs": len(timing.get("epochs") or []) or metrics.get("epochs"),
        "machine": machine,
        "source": info.get("source", "bincount system monitor"),
        "interval_s": info.get("interval_s"),
        "samples": len(rows),
        "utilization": summary,
        "timing": timing,
        "needs": need,
        "recommended": fitting[0] if fitting else None,
        "current": current_row,
        "current_instance": current,
        "instances": ranked,
        "prices": {k: table.get(k) for k in ("source", "collected", "region", "currency")},
    }
    if report["recommended"] and current_row:
        report["saving_per_run_usd"] = round(current_row["usd_per_run"] - report["recommended"]["usd_per_run"], 5)
    return report
