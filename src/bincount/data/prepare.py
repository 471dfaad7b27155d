"""`bincount prepare`: resize the originals of an ABID-layout folder once to a storage size and lay
them out by split and count, the folders SageMaker channels take (the capstones' layout)::

    <out>/train/<count>/<id>.jpg, <out>/valid/<count>/<id>.jpg, <out>/test/<count>/<id>.jpg
    <out>/metadata/<id>.json        labels and SKUs, parsed by read_abid as everywhere else
    <out>/split_manifest.csv        id,label,split: data.manifest=<out>/split_manifest.csv reproduces it
    <out>/prepare_report.json       what was written, skipped (and why) and how fast

The output is itself a ``data.root``: read_abid finds the images in the split folders. Decoding and
resizing run in a process pool across cores; a rerun re-encodes only images whose source changed
(size and mtime, kept in ``.prepare_state.json``), moves those whose split changed, and deletes
outputs no longer wanted. ``--format packed`` writes the memory-mapped format of bincount.data.packed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from bincount.data.files import atomic_write, remove_stale_temps
from bincount.data.images import ImageError, load_rgb
from bincount.data.records import METADATA_DIR, BinRecord, SkipReport, class_counts, read_abid
from bincount.data.split import SPLITS, split_records, write_manifest
from bincount.errors import BincountError
from bincount.layout import MANIFEST
from bincount.progress import progress

log = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}  # split -> folder (the capstones' names)
FORMATS = ("jpeg", "packed")
REPORT_NAME = "prepare_report.json"
STATE_NAME = ".prepare_state.json"


def resize_to_jpeg(job: tuple[str, str, int, int]) -> str | None:
    """Process-pool worker: decode ``src``, resize to size x size (as training's Resize does:
    bilinear, antialiased, aspect not kept) and write a JPEG atomically. Returns why it failed, or None."""
    src, dst, size, quality = job
    try:
        image = load_rgb(src, size).resize((size, size), Image.Resampling.BILINEAR)
    except ImageError as e:
        return str(e)
    with atomic_write(dst) as tmp:
        image.save(tmp, format="JPEG", quality=quality)
    return None


def _stamp(path: str | Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _load_state(out: Path, params: dict) -> dict:
    """Per-id source stamps and output paths of the last run; empty when its parameters differ."""
    try:
        state = json.loads((out / STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return state.get("items", {}) if state.get("params") == params else {}


def _sync_metadata(src: Path, out: Path, ids: set[str]) -> None:
    """Copy the metadata of ``ids`` (when changed) and delete any other metadata in ``out``."""
    dst_dir = out / METADATA_DIR
    dst_dir.mkdir(parents=True, exist_ok=True)
    for bin_id in ids:
        s, d = src / METADATA_DIR / f"{bin_id}.json", dst_dir / f"{bin_id}.json"
        if not d.exists() or _stamp(s) != _stamp(d):
            with atomic_write(d) as tmp:
                shutil.copy2(s, tmp)
    for stale in dst_dir.glob("*.json"):
        if stale.stem not in ids:
            stale.unlink()


def _remove_unwanted(out: Path, wanted: set[Path]) -> int:
    """Delete files in the split folders that this run did not place (another split, a dropped id)."""
    removed = 0
    for folder in SPLIT_DIRS.values():
        for count_dir in (d for d in (out / folder).glob("*") if d.is_dir()):
            remove_stale_temps(count_dir)
            for p in count_dir.iterdir():
                if p.is_file() and not p.name.startswith(".") and p not in wanted:
                    p.unlink()
                    removed += 1
            if not any(count_dir.iterdir()):  # an empty count folder would be an empty class to a channel
                count_dir.rmdir()
    return removed


def prepare_jpeg(
    records: Sequence[BinRecord],
    splits: dict[str, list[BinRecord]],
    src: Path,
    out: Path,
    report: SkipReport,
    size: int,
    quality: int,
    workers: int,
) -> dict:
    """Write the split folders; returns counts of resized, unchanged and moved images."""
    params = {"format": "jpeg", "size": size, "quality": quality}
    previous, state = _load_state(out, params), {}
    jobs, moved, unchanged = [], 0, 0
    for split, recs in splits.items():
        for r in recs:
            rel = f"{SPLIT_DIRS[split]}/{r.count}/{r.id}.jpg"
            stamp, prev = _stamp(r.image), previous.get(r.id)
            if prev and prev["src"] == stamp and (out / prev["out"]).is_file():
                if prev["out"] != rel:  # same image, new split: move it instead of re-encoding
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out / prev["out"], out / rel)
                    moved += 1
                unchanged += 1
            else:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                jobs.append((r.id, (r.image, str(out / rel), size, quality)))
            state[r.id] = {"src": stamp, "out": rel}
    failed = set()
    if jobs:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(resize_to_jpeg, [job for _, job in jobs], chunksize=8)
            for (bin_id, _), problem in zip(
                jobs, progress(results, total=len(jobs), description=f"resizing {len(jobs)} images")
            ):
                if problem:
                    report.add(problem, bin_id)
                    failed.add(bin_id)
                    del state[bin_id]
    for split in splits:  # an image that cannot be decoded leaves its split, reported
        splits[split] = [r for r in splits[split] if r.id not in failed]
    removed = _remove_unwanted(out, {out / item["out"] for item in state.values()})
    _sync_metadata(src, out, set(state))
    with atomic_write(out / STATE_NAME) as tmp:
        tmp.write_text(json.dumps({"params": params, "items": state}))
    return {"resized": len(jobs) - len(failed), "unchanged": unchanged, "moved": moved, "removed": removed}


def prepare_packed(src: Path, out: Path, size: int, classes, file_list) -> tuple[list[BinRecord], SkipReport, dict]:
    """Pack ``src`` unless the packed folder already holds these very sources at this size."""
    from bincount.data.packed import is_packed, pack_abid, read_packed

    candidates, _ = read_abid(src, classes, file_list, check_images=False)
    params, stamps = {"format": "packed", "size": size}, {r.id: _stamp(r.image) for r in candidates}
    repack = not (is_packed(out) and _load_state(out, params) == stamps)
    if repack:
        pack_abid(src, out, size, classes, file_list)
        with atomic_write(out / STATE_NAME) as tmp:
            tmp.write_text(json.dumps({"params": params, "items": stamps}))
    records, report = read_packed(out)
    return records, report, {"resized": len(records) if repack else 0, "unchanged": 0 if repack else len(records)}


def prepare(
    src: str | Path,
    out: str | Path,
    size: int | None = None,
    fmt: str = "jpeg",
    classes: Sequence[int] | None = None,
    file_list: str | Path | None = None,
    split: str | None = None,
    ratios: Sequence[float] | None = None,
    seed: int | None = None,
    quality: int = 95,
    workers: int | None = None,
) -> dict:
    """Prepare ``src`` (an ABID-layout folder) into ``out``; returns the report it also writes. ``size``,
    ``split``, ``ratios`` and ``seed`` left None are a training run's (conf/train.yaml, conf/data/abid.yaml),
    so the prepared split is the one training would draw from the originals."""
    if None in (size, split, ratios, seed):
        from bincount.config import training_defaults

        train = training_defaults()
        size = train.image_size if size is None else size
        split = train.split if split is None else split
        ratios = list(train.ratios) if ratios is None else ratios
        seed = train.seed if seed is None else seed
    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise BincountError(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    if out.resolve() == src.resolve():
        raise BincountError(f"prepare: the output {out} is the source folder; name another folder")
    started = time.perf_counter()
    workers = workers or len(os.sched_getaffinity(0))
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "packed":
        records, report, stats = prepare_packed(src, out, size, classes, file_list)
        splits = split_records(records, split, ratios, seed)
    else:
        records, report = read_abid(src, classes, file_list, check_images=False)  # the resize decodes anyway
        if not records:
            raise BincountError(f"prepare: no usable labelled images in {src}; skipped: {report.summary()}")
        splits = split_records(records, split, ratios, seed)
        stats = prepare_jpeg(records, splits, src, out, report, size, quality, workers)
    write_manifest(splits, out / MANIFEST)
    seconds = time.perf_counter() - started
    written = stats["resized"]
    result = {
        "source": str(src),
        "format": fmt,
        "size": size,
        "workers": workers,
        "images": {s: len(splits[s]) for s in SPLITS},
        "per_count": {s: class_counts(splits[s]) for s in SPLITS},
        **stats,
        "seconds": round(seconds, 2),
        "images_per_s": round(written / seconds, 1) if written else None,
        "skipped": report.to_dict(),
    }
    (out / REPORT_NAME).write_text(json.dumps(result, indent=2))
    return result
