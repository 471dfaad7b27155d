"""`bincount cost-report RUN`: what a run used (peak and mean per resource), how long each epoch took and
where the time went (waiting for data versus compute), and the cheapest SageMaker training instance that
would have done the same work, with the expected cost per run. The figures come from
bincount.reports.sizing; this renders them as ``cost_report.{md,json}``, ``utilization.png`` and
``time_per_epoch.png``. For a SageMaker job, bincount.aws.cloudwatch first reads the instance metrics
SageMaker publishes to CloudWatch into the same files."""

from __future__ import annotations

import json
from pathlib import Path

from bincount.layout import COST_REPORT, METRICS
from bincount.reports.plots import plt
from bincount.reports.sizing import build_report, load_run


def _fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _machine_line(m: dict) -> str:
    gpus = ", ".join(f"{g['name']} ({g['mem_total_gb']} GiB)" for g in m.get("gpus") or []) or "no GPU"
    where = m.get("instance_type") or m.get("hostname") or "unknown machine"
    cpu = f" ({m['cpu_model']})" if m.get("cpu_model") else ""
    return f"{where}: {m.get('cpus', '?')} CPUs{cpu}, {m.get('mem_total_gb', '?')} GiB memory, {gpus}"


def _time_section(report: dict) -> list[str]:
    t = report["timing"]
    if not t.get("epochs"):
        return ["No per-epoch timing in this run (only the system monitor callback records it)."]
    lines = [
        "| epoch | total s | waiting for data s | compute s | validation s | other s | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in t["epochs"]:
        lines.append(
            f"| {e['epoch']} | {_fmt(e['total_s'], 1)} | {_fmt(e['data_s'], 1)} | {_fmt(e['compute_s'], 1)} "
            f"| {_fmt(e['val_s'], 1)} | {_fmt(e['other_s'], 1)} | {e['steps']} |"
        )
    fit = t["total_s"]
    setup = max(0.0, report["seconds"] - fit - t.get("test_s", 0.0)) if report["seconds_from"] == METRICS else None
    share = t.get("data_share")
    line = f"Mean epoch {fit / len(t['epochs']):.1f} s; mean training step {_fmt(t.get('step_s'), 3)} s."
    if share is not None:
        verdict = (
            "the loader is the bottleneck: raise data.num_workers or use more vCPUs"
            if share > 0.3
            else "compute-bound: the loader keeps up"
        )
        line += (
            f" Of the training steps' time, **{share:.0%} waiting for data** and {1 - share:.0%} compute ({verdict})."
        )
    lines += ["", line]
    parts = [
        f"training steps {t['data_s'] + t['compute_s']:.1f} s",
        f"validation {t['val_s']:.1f} s",
        f"test {t.get('test_s', 0.0):.1f} s",
        f"other (hooks, checkpoints, logging) {t['other_s']:.1f} s",
    ]
    if setup is not None:
        parts.append(f"setup (reading and checking images, building the model) {setup:.1f} s")
    lines.append(f"Whole run {report['seconds']:.1f} s: " + ", ".join(parts) + ".")
    return lines


def render_markdown(report: dict) -> str:
    need, rec, cur = report["needs"], report["recommended"], report["current"]
    p = report["prices"]
    lines = [
        f"# Cost report: {report['run']}",
        "",
        f"Machine: {_machine_line(report['machine'])}. Run: {report['seconds']:.1f} s "
        f"({report['seconds_from']}), {report['epochs'] or '?'} epochs; {report['samples']} samples "
        f"every {report['interval_s'] or '?'} s from {report['source']}.",
        "",
        "## Utilization",
        "",
        "| resource | peak | mean | p95 | unit |",
        "|---|---|---|---|---|",
    ]
    for s in report["utilization"].values():
        lines.append(f"| {s['what']} | {_fmt(s['peak'])} | {_fmt(s['mean'])} | {_fmt(s['p95'])} | {s['unit']} |")
    lines += ["", "## Time", "", *_time_section(report), "", "## Instance", ""]
    used = (
        f"The run kept {need['cores_used']} of {need['cpus_available']} cores busy (p95) and peaked at "
        f"{need['mem_used_gb']} GiB memory"
        + (f" and {need['gpu_mem_used_gb']} GiB GPU memory" if need["uses_gpu"] else "; it did not need a GPU")
        + f". With {need['headroom']}x headroom an instance needs ≥ {need['vcpus']} vCPU, ≥ {need['mem_gb']} GiB"
        + (f", {need['gpus']} GPU(s) with ≥ {need['gpu_mem_gb']} GiB each." if need["uses_gpu"] else ".")
    )
    lines.append(used)
    if need["cpu_bound"]:
        lines.append("The run was CPU-bound on this machine: more vCPUs would likely shorten it.")
    if need["contended"]:
        lines.append(
            "Other processes kept this machine's CPUs busy (p95 ≥ 90%) while the run used fewer cores: it "
            "got less CPU than it could have used, so its time and its CPU need are understated."
        )
    lines.append("")
    if rec:
        flag = " (price disputed, see table notes)" if rec.get("checked") == "disputed" else ""
        lines.append(
            f"**Recommended: {rec['instance']}** ({rec['vcpus']} vCPU, {rec['mem_gb']} GiB"
            + (f", {rec['gpus']}x {rec['gpu']}" if rec["gpus"] else "")
            + f") at ${rec['usd_per_hour']}/h"
            f"{flag}: about **${rec['usd_per_run']:.4f} per run** of {report['seconds']:.0f} s, assuming the "
            "same run time (it holds while the run is not short of the resource the smaller instance has less of)."
        )
    else:
        lines.append("No instance of the price table fits this run; add larger ones to the table.")
    if cur:
        lines.append(
            f"This run's instance {cur['instance']} at ${cur['usd_per_hour']}/h: ${cur['usd_per_run']:.4f} per run"
            + (
                f"; the recommendation saves ${report['saving_per_run_usd']:.4f} per run "
                f"({report['saving_per_run_usd'] / cur['usd_per_run']:.0%})."
                if rec and cur["usd_per_run"]
                else "."
            )
        )
    lines += ["", "| instance | vCPU | GiB | GPU | $/h | $ per run | fits |", "|---|---|---|---|---|---|---|"]
    for c in report["instances"]:
        gpu = f"{c['gpus']}x {c['gpu']} {c['gpu_mem_gb']} GiB" if c["gpus"] else "-"
        price = f"{c['usd_per_hour']}" + ("?" if c.get("checked") == "disputed" else "")
        lines.append(
            f"| {c['instance']} | {c['vcpus']} | {c['mem_gb']} | {gpu} | {price} | {c['usd_per_run']:.4f} "
            f"| {'yes' if c['fits'] else 'no: ' + c['short_of']} |"
        )
    lines += [
        "",
        f"Prices: {p['currency']} on-demand, {p['region']}, from {p['source']}, collected {p['collected']}; "
        "`?` marks a price the public copies disagree on. Check current prices before relying on them.",
        "",
    ]
    return "\n".join(lines)


def plot_utilization(rows: list[dict], machine: dict, path: str | Path) -> Path:
    """Utilization over time, one panel per resource; setup (reading the data), validation and test shaded."""
    t = [r["t"] for r in rows]
    has = lambda col: any(r.get(col) is not None for r in rows)  # noqa: E731
    panels = [
        ("CPU (%)", [("cpu_percent", "machine")]),
        ("memory (GiB)", [("mem_used_gb", "machine"), ("proc_rss_gb", "this run")]),
        ("disk (MiB/s)", [("disk_read_mbs", "read"), ("disk_write_mbs", "write")]),
        ("network (MiB/s)", [("net_recv_mbs", "in"), ("net_sent_mbs", "out")]),
        ("GPU (%)", [("gpu_percent", "compute"), ("gpu_mem_percent", "memory")]),
    ]
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
    parts = [
        ("data_s", "waiting for data", "tab:red"),
        ("compute_s", "compute", "tab:blue"),
        ("val_s", "validation", "tab:orange"),
        ("other_s", "other", "tab:grey"),
    ]
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


def write_report(run: str | Path, prices: str | Path | None = None, current: str | None = None) -> dict:
    """Build the report and write cost_report.{md,json}, utilization.png and time_per_epoch.png into the run."""
    report = build_report(run, prices, current)
    run = Path(run)
    report["plots"] = [str(plot_utilization(load_run(run)["rows"], report["machine"], run / "utilization.png"))]
    epochs_png = plot_epochs(report["timing"], run / "time_per_epoch.png")
    if epochs_png:
        report["plots"].append(str(epochs_png))
    (run / f"{COST_REPORT}.json").write_text(json.dumps(report, indent=2))
    (run / f"{COST_REPORT}.md").write_text(render_markdown(report))
    return report
