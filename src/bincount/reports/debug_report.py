"""``bincount debug-report RUN_OR_S3_PATH``: training and validation loss along the steps and the
per-layer weight and gradient statistics, as one PNG, from either the in-process debugger's records
(``RUN/debugger/``) or a SageMaker Debugger (smdebug) trial (a job's ``debug-output``, local or S3)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bincount.errors import BincountError  # noqa: E402
from bincount.layout import DEBUG_LOSSES, DEBUG_PLOT, DEBUG_REPORT, DEBUG_TENSORS, DEBUGGER_DIR  # noqa: E402


@dataclass
class DebugData:
    source: str
    # mode ("train" | "eval") -> [(training step, loss)]
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    # collection -> tensor name -> [(training step, {"norm": .., "abs_mean": .., ...})]
    tensors: dict[str, dict[str, list[tuple[int, dict]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    rules: dict | None = None

    def summary(self) -> dict:
        fired = {n: r.get("first_step") for n, r in (self.rules or {}).items() if r.get("triggered")}
        return {
            "source": self.source,
            "losses": {m: len(v) for m, v in self.losses.items()},
            "tensors": {c: len(v) for c, v in self.tensors.items()},
            "steps": sorted({s for c in self.tensors.values() for v in c.values() for s, _ in v}),
            "rules_fired": fired if self.rules is not None else None,
        }


def load_local(debugger_dir: str | Path) -> DebugData:
    """The in-process debugger's records (``tensors.jsonl``, ``losses.jsonl``, ``report.json``)."""
    d = Path(debugger_dir)
    data = DebugData(source=str(d))
    for line in _lines(d / DEBUG_LOSSES):
        data.losses[line["mode"]].append((line["step"], line["loss"]))
    for line in _lines(d / DEBUG_TENSORS):
        data.tensors[line["collection"]][line["name"]].append((line["step"], line))
    if (d / DEBUG_REPORT).is_file():
        data.rules = json.loads((d / DEBUG_REPORT).read_text())["rules"]
    return data


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _stats(a: np.ndarray) -> dict:
    a = a.astype(np.float64).ravel()
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "norm": float(np.linalg.norm(a)),
        "abs_mean": float(np.abs(a).mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def load_smdebug(path: str) -> DebugData:
    """A SageMaker Debugger trial read with smdebug itself (local folder or s3:// URI). Evaluation
    points are placed at the number of training steps made before them."""
    try:
        from smdebug import modes
        from smdebug.trials import create_trial
    except ImportError:
        raise BincountError(
            "reading an smdebug trial needs smdebug, which pins numpy<2 and old protobuf: run "
            "`bash scripts/setup_smdebug.sh`, then `.venv-smdebug/bin/bincount debug-report "
            f"{path}`"
        ) from None
    trial = create_trial(path)
    data = DebugData(source=str(path))

    def train_steps_before(mode_step: int) -> int:
        # smdebug's global step counts every step of every mode; before the n-th evaluation step
        # there were n evaluation steps, the rest were training steps
        return trial.global_step(modes.EVAL, mode_step) - mode_step

    for name in trial.tensor_names(collection="losses"):
        t = trial.tensor(name)
        for s in t.steps(mode=modes.TRAIN):
            data.losses["train"].append((s, float(np.asarray(t.value(s, mode=modes.TRAIN)).mean())))
        for s in t.steps(mode=modes.EVAL):
            data.losses["eval"].append((train_steps_before(s), float(np.asarray(t.value(s, mode=modes.EVAL)).mean())))
    for collection in ("weights", "biases", "gradients"):
        for name in trial.tensor_names(collection=collection):
            t = trial.tensor(name)
            for s in t.steps(mode=modes.TRAIN):
                data.tensors[collection][name].append((s, _stats(np.asarray(t.value(s, mode=modes.TRAIN)))))
    return data


# -- plot ---------------------------------------------------------------------------------------
def _short(name: str) -> str:
    """A layer's name without smdebug's and Lightning's prefixes (``gradient/CountingModel_model.``)."""
    for prefix in ("gradient/", "CountingModel_", "model."):
        name = name.removeprefix(prefix)
    return name if len(name) <= 40 else "..." + name[-37:]


def _heat(ax, series: dict[str, list[tuple[int, dict]]], stat: str, title: str) -> None:
    names = list(series)
    steps = sorted({s for v in series.values() for s, _ in v})
    if not names or not steps:
        ax.set_axis_off()
        ax.set_title(f"{title}: not recorded")
        return
    col = {s: i for i, s in enumerate(steps)}
    grid = np.full((len(names), len(steps)), np.nan)
    for i, n in enumerate(names):
        for s, st in series[n]:
            if st[stat]:  # exact zeros (e.g. zero-initialised layers) stay blank
                grid[i, col[s]] = math.log10(abs(st[stat]))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label=f"log10 {stat} (grey: 0)")
    every = max(1, len(steps) // 10)
    ax.set_xticks(range(0, len(steps), every), [str(s) for s in steps[::every]])
    rows = max(1, len(names) // 16)
    ax.set_yticks(range(0, len(names), rows), [_short(n) for n in names[::rows]], fontsize=6)
    ax.set_xlabel("training step")
    ax.set_title(title)


def plot_debug(data: DebugData, path: str | Path) -> Path:
    """Loss along the steps (with the steps where rules fired) over heat maps of each layer's weight
    norm and mean |gradient| (log scale: vanishing gradients show as dark rows, explosions as bright)."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 13), gridspec_kw={"height_ratios": [1, 1.4, 1.4]})
    ax = axes[0]
    train = sorted(data.losses.get("train", []))
    if train:
        steps, values = zip(*train)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=0.8)
        k = max(1, len(values) // 25)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", label=f"train (mean of {k})")
    by_step: dict[int, list[float]] = defaultdict(list)
    for s, v in data.losses.get("eval", []):
        by_step[s].append(v)
    if by_step:
        xs = sorted(by_step)
        ax.plot(xs, [np.mean(by_step[x]) for x in xs], "s-", color="tab:orange", label="validation")
    for name, rule in (data.rules or {}).items():
        if rule.get("triggered"):
            ax.axvline(rule["first_step"], color="tab:red", ls=":", lw=1)
            ax.annotate(
                name,
                (rule["first_step"], 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="tab:red",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss ({data.source})", fontsize=9)
    ax.grid(alpha=0.3)
    if train or by_step:
        ax.legend()
    weights = {**data.tensors.get("weights", {}), **data.tensors.get("biases", {})}
    _heat(axes[1], weights, "norm", "weights and biases: L2 norm per layer")
    _heat(axes[2], data.tensors.get("gradients", {}), "abs_mean", "gradients: mean |gradient| per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# -- command --------------------------------------------------------------------------------------
def load(path: str) -> tuple[DebugData, Path]:
    """Records and the default PNG path for a run dir, a debugger dir, an smdebug trial or an S3 URI."""
    if path.startswith("s3://"):
        return load_smdebug(path), Path("debug_report.png")
    p = Path(path)
    if not p.exists():
        raise BincountError(f"debug-report: no such run directory or trial {p}")
    for d in (p / DEBUGGER_DIR, p):
        if (d / DEBUG_TENSORS).is_file():
            return load_local(d), d / DEBUG_PLOT
    if (p / "index").is_dir() or (p / "events").is_dir():
        return load_smdebug(str(p)), p / "debug_report.png"
    raise BincountError(
        f"debug-report: {p} holds neither debugger records (debugger/{DEBUG_TENSORS}) nor an "
        "smdebug trial (index/, events/); pass a run directory or a job's debug-output"
    )
