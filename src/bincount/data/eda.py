"""`bincount eda`: what a dataset folder holds (images per count, image sizes, items and distinct
SKUs per bin, SKU weights and dimensions) as PNG plots, ``eda.json`` and ``eda.md``.

Everything comes from the records read_abid returns, so the figures describe exactly the bins a
training run on the folder would see (before it keeps only ``data.classes``).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bincount.data.records import BinRecord, class_counts, read_abid
from bincount.progress import progress


def _image_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except Exception:  # PIL raises many types for bad bytes
        return None


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not v.size:
        return None
    q = np.percentile(v, [0, 25, 50, 75, 100])
    return {
        "n": int(v.size),
        "mean": round(float(v.mean()), 3),
        "min": round(float(q[0]), 3),
        "p25": round(float(q[1]), 3),
        "median": round(float(q[2]), 3),
        "p75": round(float(q[3]), 3),
        "max": round(float(q[4]), 3),
    }


def _bin_weight(r: BinRecord) -> float | None:
    """Total weight of a bin's items (lb); None when a SKU's weight is unknown."""
    if not r.skus or any(s.weight_lb is None for s in r.skus):
        return None
    return sum(s.quantity * s.weight_lb for s in r.skus)


def summarise(root: str | Path, file_list: str | Path | None = None, workers: int = 8) -> tuple[dict, dict]:
    """The summary of a folder, and the raw series the plots draw."""
    records, report = read_abid(root, None, file_list, check_images=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = list(
            progress(
                pool.map(_image_size, [r.image for r in records]), total=len(records), description="reading image sizes"
            )
        )
    skus = [s for r in records for s in r.skus]
    series = {
        "count": [r.count for r in records],
        "size": [s for s in sizes if s],
        "distinct_skus": [r.distinct_skus for r in records],
        "sku_weight_lb": [s.weight_lb for s in skus if s.weight_lb is not None],
        "bin_weight_lb": [w for w in map(_bin_weight, records) if w is not None],
        "sku_longest_side_in": [max(s.dims_in) for s in skus if s.dims_in],
        "sku_volume_in3": [float(np.prod(s.dims_in)) for s in skus if s.dims_in],
    }
    summary = {
        "root": str(root),
        "bins": len(records),
        "skipped": report.summary(),
        "images_per_count": {str(k): v for k, v in class_counts(records).items()},
        "image_sizes": {f"{w}x{h}": n for (w, h), n in Counter(series["size"]).most_common(10)},
        "unreadable_images": sum(s is None for s in sizes),
        "items_per_bin": _stats(series["count"]),
        "distinct_skus_per_bin": _stats(series["distinct_skus"]),
        "distinct_skus_histogram": {str(k): v for k, v in sorted(Counter(series["distinct_skus"]).items())},
        "skus": len(skus),
        "distinct_asins": len({s.asin for s in skus}),
        "sku_weight_lb": _stats(series["sku_weight_lb"]),
        "bin_weight_lb": _stats(series["bin_weight_lb"]),
        "sku_longest_side_in": _stats(series["sku_longest_side_in"]),
        "sku_volume_in3": _stats(series["sku_volume_in3"]),
    }
    return summary, series


def _bar(ax, counter: Counter, xlabel: str, title: str) -> None:
    keys = sorted(counter)
    ax.bar(range(len(keys)), [counter[k] for k in keys], color="tab:blue")
    step = max(1, len(keys) // 15)  # long tails (raw ABID has bins of 40+ items): label every few bars
    ax.set_xticks(range(0, len(keys), step), [str(k) for k in keys[::step]])
    ax.set(xlabel=xlabel, ylabel="bins", title=title)


def _hist(ax, values, xlabel: str, title: str, log: bool = False) -> None:
    v = np.asarray(values, dtype=float)
    if log:
        v = v[v > 0]
        bins = np.logspace(np.log10(v.min()), np.log10(v.max()), 40) if v.size else 10
        ax.set_xscale("log")
    else:
        bins = 40
    ax.hist(v, bins=bins, color="tab:green")
    ax.set(xlabel=xlabel, ylabel="number", title=title)


def plot(series: dict, out: Path) -> list[Path]:
    """One PNG per question a person asks of a dataset."""
    from bincount.reports.plots import plt  # headless matplotlib, imported only when plotting

    paths = []

    def save(name: str, fig) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)

    fig, ax = plt.subplots(figsize=(7, 4))
    _bar(ax, Counter(series["count"]), "items in the bin (EXPECTED_QUANTITY)", "images per count")
    save("counts.png", fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    sizes = Counter(series["size"])
    if sizes:
        ax.scatter(
            [w for w, _ in sizes],
            [h for _, h in sizes],
            s=[10 + 200 * n / max(sizes.values()) for n in sizes.values()],
            alpha=0.6,
        )
    ax.set(xlabel="width (px)", ylabel="height (px)", title="image sizes (area ~ number of images)")
    save("image_sizes.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _bar(axes[0], Counter(series["distinct_skus"]), "distinct SKUs in the bin", "distinct SKUs per bin")
    axes[1].scatter(series["distinct_skus"], series["count"], alpha=0.2, s=8)
    axes[1].set(xlabel="distinct SKUs", ylabel="items", title="items vs distinct SKUs")
    save("skus.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _hist(axes[0], series["sku_weight_lb"], "pounds", "weight of one SKU item", log=True)
    _hist(axes[1], series["bin_weight_lb"], "pounds", "total weight of a bin's items", log=True)
    save("weights.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _hist(axes[0], series["sku_longest_side_in"], "inches", "longest side of a SKU item", log=True)
    _hist(axes[1], series["sku_volume_in3"], "cubic inches", "volume of a SKU item", log=True)
    save("dimensions.png", fig)
    return paths


def _markdown(summary: dict, plots: list[Path]) -> str:
    lines = [
        f"# Dataset report: {summary['root']}",
        "",
        f"{summary['bins']} bins, {summary['skus']} SKU entries ({summary['distinct_asins']} distinct ASINs); "
        f"skipped: {summary['skipped'] or 'none'}; unreadable images: {summary['unreadable_images']}.",
        "",
        "| count | images |",
        "|---:|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["images_per_count"].items()]
    lines += ["", "| measure | n | mean | min | p25 | median | p75 | max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in (
        "items_per_bin",
        "distinct_skus_per_bin",
        "sku_weight_lb",
        "bin_weight_lb",
        "sku_longest_side_in",
        "sku_volume_in3",
    ):
        s = summary[key]
        if s:
            lines.append(
                f"| {key} | "
                + " | ".join(str(s[k]) for k in ("n", "mean", "min", "p25", "median", "p75", "max"))
                + " |"
            )
    lines += ["", "Most common image sizes: " + ", ".join(f"{k} ({v})" for k, v in summary["image_sizes"].items()), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def eda(root: str | Path, out: str | Path, file_list: str | Path | None = None) -> dict:
    """Write ``eda.json``, ``eda.md`` and the PNG plots of ``root`` into ``out``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, series = summarise(root, file_list)
    plots = plot(series, out)
    (out / "eda.json").write_text(json.dumps(summary, indent=2))
    (out / "eda.md").write_text(_markdown(summary, plots))
    return summary
