"""Sweep summaries. After `python train.py -m ...` (an Optuna search or a plain grid) the multirun folder
gets one table of every trial and the best trial's overrides: ``sweep_summary.{json,md,png}``. A Hydra
callback (bincount.callbacks.sweep_end) writes it when the sweep ends; `bincount sweep-summary DIR`
rewrites it for a sweep that was cut short. The metric and its direction are the sweep's own
(``optimized_metric``, ``optimized_mode`` of its trials' config) unless given."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bincount.errors import BincountError
from bincount.layout import METRICS, SWEEP_SUMMARY
from bincount.objective import best_of, check_mode, direction
from bincount.reports.plots import plt

# overrides that make a run a sweep trial: left out of the command that retrains and tests the best
_SWEEP_KEYS = ("hparams_search", "hydra.", "test")


def _overrides(trial_dir: Path) -> dict[str, str]:
    path = trial_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path))
    return dict(item.split("=", 1) for item in items if "=" in item)


def read_trials(sweep_dir: Path, metric: str) -> list[dict]:
    """One entry per trial folder (``<sweep>/<n>/``): its overrides and the metric at its best checkpoint,
    from the run's own metrics.json. A trial without metrics.json failed or has not finished."""
    trials = []
    for d in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        metrics_file = d / METRICS
        m = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        value = (m.get("best_val") or {}).get(metric)
        trials.append(
            {
                "trial": int(d.name),
                "dir": str(d),
                "overrides": _overrides(d),
                "value": float(value) if value is not None and math.isfinite(value) else None,
                "test_acc": m.get("test/acc"),
                "seconds": m.get("seconds"),
                "epochs": m.get("epochs"),
                "status": "complete" if value is not None else ("no metric" if m else "failed or running"),
            }
        )
    return trials


def swept_keys(trials: list[dict], declared: Iterable[str] = ()) -> list[str]:
    """The parameters a sweep varied: those its sweeper declared plus any whose value differs between trials."""
    keys = list(declared)
    seen: dict[str, set] = {}
    for t in trials:
        for k, v in t["overrides"].items():
            seen.setdefault(k, set()).add(v)
    keys += [k for k, values in seen.items() if len(values) > 1 and k not in keys]
    return [k for k in keys if any(k in t["overrides"] for t in trials)]


def sweep_objective(sweep_dir: Path) -> tuple[str, str]:
    """``(optimized_metric, optimized_mode)`` of a sweep, from the config its first trial saved."""
    for d in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        saved = d / ".hydra" / "config.yaml"
        if saved.is_file():
            cfg = OmegaConf.load(saved)
            return str(cfg.get("optimized_metric", "val/acc")), str(cfg.get("optimized_mode", "max"))
    raise BincountError(f"{sweep_dir}: no trial saved its config (<n>/.hydra/config.yaml); pass --metric and --mode")


def summarize_sweep(
    sweep_dir: str | Path,
    metric: str | None = None,
    mode: str | None = None,
    declared: Iterable[str] = (),
    entry: str = "train.py",
) -> dict:
    """Write ``sweep_summary.{json,md,png}`` into the sweep folder and return the summary. ``metric`` and
    ``mode`` (max or min) default to the sweep's own."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise BincountError(f"{sweep_dir}: no such sweep folder (outputs/train/multiruns/<time>/)")
    if not any(p.is_dir() and p.name.isdigit() for p in sweep_dir.iterdir()):
        raise BincountError(f"{sweep_dir}: no trial folders (0/, 1/, ...); is this a multirun folder?")
    if metric is None or mode is None:
        own_metric, own_mode = sweep_objective(sweep_dir)
        metric, mode = metric or own_metric, mode or own_mode
    check_mode(mode)
    trials = read_trials(sweep_dir, metric)
    done = [t for t in trials if t["value"] is not None]
    best = best_of(mode)(done, key=lambda t: t["value"]) if done else None
    keys = swept_keys(trials, declared)
    summary: dict[str, Any] = {
        "sweep_dir": str(sweep_dir),
        "metric": metric,
        "direction": direction(mode),
        "swept": keys,
        "trials": trials,
        "completed": len(done),
        "best": None,
    }
    if best is not None:
        keep = {k: v for k, v in best["overrides"].items() if not k.lstrip("+~").startswith(_SWEEP_KEYS)}
        summary["best"] = {
            "trial": best["trial"],
            "value": best["value"],
            "dir": best["dir"],
            "params": {k: best["overrides"][k] for k in keys},
            "command": " ".join(["python", entry] + [shlex.quote(f"{k}={v}") for k, v in keep.items()]),
        }
    optuna_file = sweep_dir / "optimization_results.yaml"
    if optuna_file.is_file():
        summary["optuna"] = OmegaConf.to_container(OmegaConf.load(optuna_file))
    (sweep_dir / f"{SWEEP_SUMMARY}.json").write_text(json.dumps(summary, indent=2))
    (sweep_dir / f"{SWEEP_SUMMARY}.md").write_text(render_markdown(summary))
    if done:
        summary["plot"] = str(plot_sweep(summary, sweep_dir / f"{SWEEP_SUMMARY}.png"))
    return summary


def render_markdown(s: dict) -> str:
    keys = s["swept"]
    lines = [
        f"# Sweep {s['sweep_dir']}",
        "",
        f"{len(s['trials'])} trials, {s['completed']} completed; {s['direction']} {s['metric']}.",
        "",
    ]
    if s["best"]:
        b = s["best"]
        lines += [
            f"**Best: trial {b['trial']}**, {s['metric']} = {b['value']:.4f}, with "
            + ", ".join(f"`{k}={_short(v)}`" for k, v in b["params"].items())
            + ".",
            "",
            "Train and test it:",
            "",
            "```bash",
            b["command"],
            "```",
            "",
        ]
    lines += [
        "| trial | " + " | ".join([s["metric"], *keys, "seconds", "status"]) + " |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for t in s["trials"]:
        value = f"{t['value']:.4f}" if t["value"] is not None else "-"
        mark = " **(best)**" if s["best"] and t["trial"] == s["best"]["trial"] else ""
        cells = [
            str(t["trial"]) + mark,
            value,
            *(_short(t["overrides"].get(k, "")) for k in keys),
            f"{t['seconds']:.0f}" if t["seconds"] is not None else "-",
            t["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(value: str) -> str:
    """A float override as 4 significant digits for the table (the JSON and the command keep it exact)."""
    try:
        return value if float(value).is_integer() or "." not in value else f"{float(value):.4g}"
    except ValueError:
        return value


def _as_number(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_sweep(s: dict, path: Path) -> Path:
    """The metric per trial with the running best, and the metric against each swept parameter."""
    done = [t for t in s["trials"] if t["value"] is not None]
    keys = s["swept"]
    cols = min(3, len(keys) + 1)
    rows = math.ceil((len(keys) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    ax = axes[0, 0]
    pick = max if s["direction"] == "maximize" else min
    xs, ys = [t["trial"] for t in done], [t["value"] for t in done]
    running = [pick(ys[: i + 1]) for i in range(len(ys))]
    ax.plot(xs, ys, "o", label="trial")
    ax.step(xs, running, where="post", label="best so far")
    if s["best"]:
        ax.plot([s["best"]["trial"]], [s["best"]["value"]], "r*", ms=14, label=f"best (trial {s['best']['trial']})")
    ax.set_xlabel("trial")
    ax.set_ylabel(s["metric"])
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for i, key in enumerate(keys, start=1):
        ax = axes[i // cols, i % cols]
        values = [t["overrides"].get(key, "") for t in done]
        numbers = _as_number(values)
        if numbers is not None:
            ax.plot(numbers, ys, "o")
            if min(numbers) > 0 and max(numbers) / min(numbers) > 50:
                ax.set_xscale("log")
        else:
            labels = sorted(set(values))
            ax.plot([labels.index(v) for v in values], ys, "o")
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_xlabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    for j in range(len(keys) + 1, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle(f"sweep: {s['metric']} ({s['completed']} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
