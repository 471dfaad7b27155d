"""`bincount cost-report RUN`: what a run used (peak and mean per resource), how long each epoch took and
where the time went (waiting for data versus compute), and the cheapest SageMaker training instance that
would have done the same work, with the expected cost per run from the price table in conf/cost/.

A run directory holds what the system monitor wrote (``utilization.csv`` / ``.json``) and what training
wrote (``metrics.json``); for a SageMaker job, ``--sagemaker-job NAME`` first reads the instance metrics
SageMaker publishes to CloudWatch into the same files."""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

from omegaconf import OmegaConf

from bincount.errors import BincountError
from bincount.monitor.system import CSV_NAME, JSON_NAME, read_csv, summarize, write_csv
from bincount.paths import PROJECT_ROOT
from bincount.reports.plots import plt

DEFAULT_PRICES = PROJECT_ROOT / "conf" / "cost" / "prices.yaml"
REPORT_NAME = "cost_report"


# -- inputs ---------------------------------------------------------------------------------------
def load_prices(path: str | Path = DEFAULT_PRICES) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BincountError(f"--prices: no price table at {path}; pass --prices FILE (see conf/cost/prices.yaml)")
    table = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not table.get("instances"):
        raise BincountError(f"--prices: {path} lists no instances under `instances:`")
    return table


def load_run(run: str | Path) -> dict:
    run = Path(run)
    if not (run / CSV_NAME).is_file():
        raise BincountError(f"{run}: no {CSV_NAME}; train with the system monitor on (callbacks=default), "
                            "or read a SageMaker job's metrics with --sagemaker-job NAME")
    info = json.loads((run / JSON_NAME).read_text()) if (run / JSON_NAME).is_file() else {}
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    return {"dir": run, "rows": read_csv(run / CSV_NAME), "info": info, "metrics": metrics}


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
    uses_gpu = n_gpus > 0 and (gpu_busy > float(rules.get("gpu_min_percent", 5)) or
                               ("gpu_percent" not in summary and gpu_mem_used > 0.5))
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
        out.append({"instance": name, **spec, "usd_per_run": round(spec["usd_per_hour"] * seconds / 3600, 5),
                    "fits": not short, "short_of": "; ".join(short)})
    return sorted(out, key=lambda c: (c["usd_per_hour"], c["instance"]))


def build_report(run: str | Path, prices: str | Path = DEFAULT_PRICES, current: str | None = None) -> dict:
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
        "seconds_from": "billable_s" if info.get("billable_s") else ("metrics.json" if metrics.get("seconds")
                                                                      else "monitor"),
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


# -- output ---------------------------------------------------------------------------------------
def _fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _machine_line(m: dict) -> str:
    gpus = ", ".join(f"{g['name']} ({g['mem_total_gb']} GiB)" for g in m.get("gpus") or []) or "no GPU"
    where = m.get("instance_type") or m.get("hostname") or "unknown machine"
    return f"{where}: {m.get('cpus', '?')} CPUs, {m.get('mem_total_gb', '?')} GiB memory, {gpus}"


def _time_section(report: dict) -> list[str]:
    t = report["timing"]
    if not t.get("epochs"):
        return ["No per-epoch timing in this run (only the system monitor callback records it)."]
    lines = ["| epoch | total s | waiting for data s | compute s | validation s | other s | steps |",
             "|---|---|---|---|---|---|---|"]
    for e in t["epochs"]:
        lines.append(f"| {e['epoch']} | {_fmt(e['total_s'], 1)} | {_fmt(e['data_s'], 1)} | {_fmt(e['compute_s'], 1)} "
                     f"| {_fmt(e['val_s'], 1)} | {_fmt(e['other_s'], 1)} | {e['steps']} |")
    fit = t["total_s"]
    setup = max(0.0, report["seconds"] - fit - t.get("test_s", 0.0)) if report["seconds_from"] == "metrics.json" else None
    share = t.get("data_share")
    line = f"Mean epoch {fit / len(t['epochs']):.1f} s; mean training step {_fmt(t.get('step_s'), 3)} s."
    if share is not None:
        verdict = ("the loader is the bottleneck: raise data.num_workers or use more vCPUs" if share > 0.3
                   else "compute-bound: the loader keeps up")
        line += f" Of the training steps' time, **{share:.0%} waiting for data** and {1 - share:.0%} compute ({verdict})."
    lines += ["", line]
    parts = [f"training steps {t['data_s'] + t['compute_s']:.1f} s", f"validation {t['val_s']:.1f} s",
             f"test {t.get('test_s', 0.0):.1f} s", f"other (hooks, checkpoints, logging) {t['other_s']:.1f} s"]
    if setup is not None:
        parts.append(f"setup (reading and checking images, building the model) {setup:.1f} s")
    lines.append(f"Whole run {report['seconds']:.1f} s: " + ", ".join(parts) + ".")
    return lines


def render_markdown(report: dict) -> str:
    need, rec, cur = report["needs"], report["recommended"], report["current"]
    p = report["prices"]
    lines = [f"# Cost report: {report['run']}", "",
             f"Machine: {_machine_line(report['machine'])}. Run: {report['seconds']:.1f} s "
             f"({report['seconds_from']}), {report['epochs'] or '?'} epochs; {report['samples']} samples "
             f"every {report['interval_s'] or '?'} s from {report['source']}.", "",
             "## Utilization", "", "| resource | peak | mean | p95 | unit |", "|---|---|---|---|---|"]
    for col, s in report["utilization"].items():
        lines.append(f"| {s['what']} | {_fmt(s['peak'])} | {_fmt(s['mean'])} | {_fmt(s['p95'])} | {s['unit']} |")
    lines += ["", "## Time", "", *_time_section(report), "", "## Instance", ""]
    used = (f"The run kept {need['cores_used']} of {need['cpus_available']} cores busy (p95) and peaked at "
            f"{need['mem_used_gb']} GiB memory" + (f" and {need['gpu_mem_used_gb']} GiB GPU memory"
                                                   if need["uses_gpu"] else "; it did not need a GPU")
            + f". With {need['headroom']}x headroom an instance needs ≥ {need['vcpus']} vCPU, ≥ {need['mem_gb']} GiB"
            + (f", {need['gpus']} GPU(s) with ≥ {need['gpu_mem_gb']} GiB each." if need["uses_gpu"] else "."))
    lines.append(used)
    if need["cpu_bound"]:
        lines.append("The run was CPU-bound on this machine: more vCPUs would likely shorten it.")
    if need["contended"]:
        lines.append("Other processes kept this machine's CPUs busy (p95 ≥ 90%) while the run used fewer cores: it "
                     "got less CPU than it could have used, so its time and its CPU need are understated.")
    lines.append("")
    if rec:
        flag = " (price disputed, see table notes)" if rec.get("checked") == "disputed" else ""
        lines.append(f"**Recommended: {rec['instance']}** ({rec['vcpus']} vCPU, {rec['mem_gb']} GiB"
                     + (f", {rec['gpus']}x {rec['gpu']}" if rec["gpus"] else "") + f") at ${rec['usd_per_hour']}/h"
                     f"{flag}: about **${rec['usd_per_run']:.4f} per run** of {report['seconds']:.0f} s, assuming the "
                     "same run time (it holds while the run is not short of the resource the smaller instance has less of).")
    else:
        lines.append("No instance of the price table fits this run; add larger ones to the table.")
    if cur:
        lines.append(f"This run's instance {cur['instance']} at ${cur['usd_per_hour']}/h: ${cur['usd_per_run']:.4f} per run"
                     + (f"; the recommendation saves ${report['saving_per_run_usd']:.4f} per run "
                        f"({report['saving_per_run_usd'] / cur['usd_per_run']:.0%})." if rec and cur['usd_per_run'] else "."))
    lines += ["", "| instance | vCPU | GiB | GPU | $/h | $ per run | fits |", "|---|---|---|---|---|---|---|"]
    for c in report["instances"]:
        gpu = f"{c['gpus']}x {c['gpu']} {c['gpu_mem_gb']} GiB" if c["gpus"] else "-"
        price = f"{c['usd_per_hour']}" + ("?" if c.get("checked") == "disputed" else "")
        lines.append(f"| {c['instance']} | {c['vcpus']} | {c['mem_gb']} | {gpu} | {price} | {c['usd_per_run']:.4f} "
                     f"| {'yes' if c['fits'] else 'no: ' + c['short_of']} |")
    lines += ["", f"Prices: {p['currency']} on-demand, {p['region']}, from {p['source']}, collected {p['collected']}; "
              "`?` marks a price the public copies disagree on. Check current prices before relying on them.", ""]
    return "\n".join(lines)


def plot_utilization(rows: list[dict], machine: dict, path: str | Path) -> Path:
    """Utilization over time, one panel per resource; setup (reading the data), validation and test shaded."""
    t = [r["t"] for r in rows]
    has = lambda col: any(r.get(col) is not None for r in rows)  # noqa: E731
    panels = [("CPU (%)", [("cpu_percent", "machine")]),
              ("memory (GiB)", [("mem_used_gb", "machine"), ("proc_rss_gb", "this run")]),
              ("disk (MiB/s)", [("disk_read_mbs", "read"), ("disk_write_mbs", "write")]),
              ("network (MiB/s)", [("net_recv_mbs", "in"), ("net_sent_mbs", "out")]),
              ("GPU (%)", [("gpu_percent", "compute"), ("gpu_mem_percent", "memory")])]
    cpus = machine.get("cpus_usable") or machine.get("cpus") or 1
    panels = [(title, [(c, lbl) for c, lbl in series if has(c)]) for title, series in panels]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.1 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels):
        for col, label in series:
            ax.plot(t, [r.get(col) if r.get(col) is not None else float("nan") for r in rows], label=label, lw=1.2)
        if title.startswith("CPU") and has("proc_cpu_cores"):
            ax.plot(t, [100 * (r["proc_cpu_cores"] or 0) / cpus for r in rows], label="this run", lw=1.2)
        if title.startswith("memory") and machine.get("mem_total_gb"):
            ax.axhline(machine["mem_total_gb"], ls="--", c="grey", lw=0.8, label="installed")
        if title.startswith("disk") and has("disk_percent"):
            title += f"; space used {max(r['disk_percent'] for r in rows if r.get('disk_percent') is not None):.0f}%"
        _shade_phases(ax, rows)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the run started")
    fig.suptitle("utilization over time (shaded: reading the data grey, validation orange, test green)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _shade_phases(ax, rows: list[dict]) -> None:
    colors = {"setup": "tab:grey", "val": "tab:orange", "validate": "tab:orange", "test": "tab:green"}
    start = None
    for i, r in enumerate(rows):
        phase = r.get("phase")
        nxt = rows[i + 1].get("phase") if i + 1 < len(rows) else None
        if phase in colors and start is None:
            start = rows[i - 1]["t"] if i else r["t"]
        if start is not None and nxt != phase:
            ax.axvspan(start, r["t"], color=colors[phase], alpha=0.12, lw=0)
            start = None


def plot_epochs(timing: dict, path: str | Path) -> Path | None:
    """Where each epoch's time went: waiting for data, compute, validation, the rest."""
    epochs = timing.get("epochs") or []
    if not epochs:
        return None
    parts = [("data_s", "waiting for data", "tab:red"), ("compute_s", "compute", "tab:blue"),
             ("val_s", "validation", "tab:orange"), ("other_s", "other", "tab:grey")]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(epochs) + 1.6))
    left = [0.0] * len(epochs)
    ys = [e["epoch"] for e in epochs]
    for key, label, color in parts:
        widths = [e[key] for e in epochs]
        ax.barh(ys, widths, left=left, label=label, color=color)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(ys)
    ax.invert_yaxis()
    ax.set_ylabel("epoch")
    ax.set_xlabel("seconds")
    ax.set_title("time per epoch", pad=24)
    ax.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_report(run: str | Path, prices: str | Path = DEFAULT_PRICES, current: str | None = None) -> dict:
    """Build the report and write cost_report.{md,json}, utilization.png and time_per_epoch.png into the run."""
    report = build_report(run, prices, current)
    run = Path(run)
    report["plots"] = [str(plot_utilization(load_run(run)["rows"], report["machine"], run / "utilization.png"))]
    epochs_png = plot_epochs(report["timing"], run / "time_per_epoch.png")
    if epochs_png:
        report["plots"].append(str(epochs_png))
    (run / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2))
    (run / f"{REPORT_NAME}.md").write_text(render_markdown(report))
    return report


# -- SageMaker jobs: instance metrics from CloudWatch -----------------------------------------------
CLOUDWATCH_NAMESPACE = "/aws/sagemaker/TrainingJobs"
# CloudWatch metric -> our column. CPU and GPU figures are sums over cores / GPUs (400% = 4 busy cores).
CLOUDWATCH_METRICS = {"CPUUtilization": "cpu_percent", "MemoryUtilization": "mem_percent",
                      "DiskUtilization": "disk_percent", "GPUUtilization": "gpu_percent",
                      "GPUMemoryUtilization": "gpu_mem_percent"}


def fetch_sagemaker_utilization(job_name: str, run: str | Path, session=None, prices: str | Path = DEFAULT_PRICES,
                                host: int = 1, period_s: int = 60) -> Path:
    """Read a training job's instance metrics (published by SageMaker to CloudWatch under
    ``/aws/sagemaker/TrainingJobs``, dimension Host=``JOB/algo-N``) into ``RUN/utilization.{csv,json}``.
    Per-epoch timing written by the in-container monitor into an existing ``utilization.json`` is kept."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.Session()
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    try:
        job = session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    except (BotoCoreError, ClientError) as e:
        raise BincountError(f"--sagemaker-job {job_name}: cannot describe the training job ({e}); check the name, "
                            "region and AWS credentials") from None
    itype, count = job["ResourceConfig"]["InstanceType"], job["ResourceConfig"].get("InstanceCount", 1)
    spec = load_prices(prices)["instances"].get(itype, {})
    start = job.get("TrainingStartTime") or job["CreationTime"]
    end = (job.get("TrainingEndTime") or datetime.now(timezone.utc)) + timedelta(minutes=5)
    queries = [{"Id": f"{stat.lower()}{i}", "ReturnData": True,
                "MetricStat": {"Metric": {"Namespace": CLOUDWATCH_NAMESPACE, "MetricName": metric,
                                          "Dimensions": [{"Name": "Host", "Value": f"{job_name}/algo-{host}"}]},
                               "Period": period_s, "Stat": stat}}
               for i, metric in enumerate(CLOUDWATCH_METRICS) for stat in ("Average", "Maximum")]
    series: dict[str, dict] = {}
    paginator = session.client("cloudwatch").get_paginator("get_metric_data")
    for page in paginator.paginate(MetricDataQueries=queries, StartTime=start - timedelta(minutes=1), EndTime=end):
        for res in page["MetricDataResults"]:
            series.setdefault(res["Id"], {}).update(zip(res["Timestamps"], res["Values"]))
    if not any(series.values()):
        raise BincountError(f"--sagemaker-job {job_name}: CloudWatch has no instance metrics for host "
                            f"{job_name}/algo-{host} between {start} and {end}")
    vcpus, n_gpus = spec.get("vcpus"), spec.get("gpus") or 0
    scale = {"cpu_percent": vcpus or 1, "gpu_percent": max(n_gpus, 1), "gpu_mem_percent": max(n_gpus, 1)}
    times = sorted({ts for i in range(len(CLOUDWATCH_METRICS)) for ts in series.get(f"average{i}", {})})
    rows, peaks = [], {}
    for ts in times:
        row = {"t": (ts - times[0]).total_seconds(), "phase": "job"}
        for i, col in enumerate(CLOUDWATCH_METRICS.values()):
            v = series.get(f"average{i}", {}).get(ts)
            row[col] = None if v is None else v / scale.get(col, 1)
        rows.append(row)
    for i, col in enumerate(CLOUDWATCH_METRICS.values()):
        maxima = series.get(f"maximum{i}", {}).values()
        if maxima:
            peaks[col] = round(max(maxima) / scale.get(col, 1), 3)
    if spec:  # absolute figures from the instance's size
        for row in rows:
            row["mem_used_gb"] = None if row["mem_percent"] is None else row["mem_percent"] * spec["mem_gb"] / 100
            if n_gpus and row.get("gpu_mem_percent") is not None:
                row["gpu_mem_gb"] = row["gpu_mem_percent"] * spec["gpu_mem_gb"] * n_gpus / 100
        if "mem_percent" in peaks:
            peaks["mem_used_gb"] = round(peaks["mem_percent"] * spec["mem_gb"] / 100, 3)
        if n_gpus and "gpu_mem_percent" in peaks:
            peaks["gpu_mem_gb"] = round(peaks["gpu_mem_percent"] * spec["gpu_mem_gb"] * n_gpus / 100, 3)
    write_csv(rows, run / CSV_NAME)
    previous = json.loads((run / JSON_NAME).read_text()) if (run / JSON_NAME).is_file() else {}
    gpus = [{"name": spec.get("gpu") or "GPU", "mem_total_gb": spec.get("gpu_mem_gb")}] * n_gpus
    (run / JSON_NAME).write_text(json.dumps({
        "source": f"CloudWatch {CLOUDWATCH_NAMESPACE} ({job_name}/algo-{host} of {count})",
        "interval_s": period_s,
        "duration_s": rows[-1]["t"] + period_s if rows else 0.0,
        "billable_s": job.get("BillableTimeInSeconds"),
        "machine": {"hostname": f"{job_name}/algo-{host}", "instance_type": itype, "cpus": vcpus,
                    "cpus_usable": vcpus, "mem_total_gb": spec.get("mem_gb"), "gpus": gpus},
        "summary": summarize(rows),
        "peaks": peaks,
        "timing": previous.get("timing", {}),
    }, indent=2))
    return run / JSON_NAME


# -- command --------------------------------------------------------------------------------------
def _cost_report(args: argparse.Namespace) -> int:
    if args.sagemaker_job:
        import boto3

        fetch_sagemaker_utilization(args.sagemaker_job, args.run, boto3.Session(region_name=args.region),
                                    args.prices)
    report = write_report(args.run, args.prices, args.instance_type)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_markdown(report))
        print(f"written: {Path(args.run) / (REPORT_NAME + '.md')}, " + ", ".join(report["plots"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost-report", help="utilization, time per epoch and the cheapest fitting SageMaker "
                                           "instance for a run directory")
    p.add_argument("run", help="a run directory (outputs/train/runs/<time>/) or, with --sagemaker-job, where to "
                               "write the job's report")
    p.add_argument("--prices", default=str(DEFAULT_PRICES), help="price table (default: conf/cost/prices.yaml)")
    p.add_argument("--instance-type", help="the instance the run used, to compare against (found by itself in a "
                                           "SageMaker job)")
    p.add_argument("--sagemaker-job", help="read this SageMaker training job's instance metrics from CloudWatch first")
    p.add_argument("--region", help="AWS region of the job (default: the AWS configuration's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cost_report)
