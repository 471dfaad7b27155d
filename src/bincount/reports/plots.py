"""PNG plots of a run: learning curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in SageMaker containers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Train/val loss and accuracy per epoch from a list of per-epoch metric dicts."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for stage, style in (("train", "-o"), ("val", "-s")):
            pts = [(h["epoch"], h[f"{stage}/{metric}"]) for h in history if f"{stage}/{metric}" in h]
            if pts:
                ax.plot(*zip(*pts), style, label=stage)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    classes: Sequence[int | str],
    path: str | Path,
    title: str = "confusion matrix",
) -> Path:
    """Counts and row-normalised shares (recall per true class) in one heat map; ``classes`` labels the rows
    and columns (``CountClasses.names``: ``"6+"`` for the overflow class)."""
    m = np.asarray(confusion, dtype=float)
    share = m / np.clip(m.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    acc = np.trace(m) / max(m.sum(), 1)
    ax.set_title(f"{title} (acc {acc:.1%}, n={int(m.sum())})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_reliability(
    bins: Sequence[dict],
    path: str | Path,
    title: str = "reliability",
    ece: float | None = None,
    ece_before: float | None = None,
) -> Path:
    """Reliability diagram: per confidence bin, how often the top count was right against how sure the
    model said it was (on the diagonal = calibrated), with the number of images per bin below."""
    used = [b for b in bins if b["images"]]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    if used:
        width = used[0]["high"] - used[0]["low"]
        centres = [(b["low"] + b["high"]) / 2 for b in used]
        ax.bar(centres, [b["accuracy"] for b in used], width=width * 0.9, alpha=0.7, label="share right")
        ax.plot(
            [b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="C1", label="mean confidence"
        )
        hist.bar(centres, [b["images"] for b in used], width=width * 0.9, color="grey")
    ax.set_ylabel("share of top counts that were right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    figures = ", ".join(f"{k} {v:.3f}" for k, v in (("ECE", ece), ("before calibration", ece_before)) if v is not None)
    ax.set_title(f"{title}" + (f"\n{figures}" if figures else ""))
    hist.set_xlabel("confidence of the top count")
    hist.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
