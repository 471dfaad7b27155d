"""``bincount predict MODEL IMAGES...``: counts for image files, folders or ``s3://`` URIs, written
as CSV or JSON with class probabilities and confidence.

A folder in the ABID layout (``bin-images/`` + ``metadata/``) also gives each image its true count
(``true_count``), which reconcile uses to measure its decisions; ``--split val`` keeps only the
images of one split of the run the checkpoint came from (to choose a threshold on validation data).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bincount.data.images import IMAGE_SUFFIXES, ImageError
from bincount.data.files import read_text
from bincount.data.records import IMAGE_DIR, METADATA_DIR, read_abid
from bincount.errors import BincountError
from bincount.progress import progress
from bincount.serve.predictor import BACKENDS, Predictor, load_predictor


@dataclass
class Prediction:
    id: str
    image: str
    count: int
    confidence: float
    probabilities: dict[int, float]
    true_count: int | None = None

    def row(self) -> dict:
        row = {"id": self.id, "image": self.image, "predicted_count": self.count,
               "confidence": round(self.confidence, 6)}
        row.update({f"p_{c}": round(p, 6) for c, p in self.probabilities.items()})
        row["true_count"] = "" if self.true_count is None else self.true_count
        return row


# -- finding images -----------------------------------------------------------------------------
@dataclass
class ImageInputs:
    """What the sources held: image files to predict, entries that should have been images but cannot
    be read (path -> reason), and files passed over because their names are not images' (hidden files,
    other suffixes)."""

    images: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _walk(folder: Path, found: ImageInputs) -> int:
    """Every file under ``folder``, following folder links once each (a link back up is a loop, a link
    to a folder already searched would predict its images twice: both are listed as skipped).
    Returns how many images and skipped entries it added."""
    before = len(found.images) + len(found.skipped)
    searched: set[str] = set()

    def unreadable(e: OSError) -> None:
        found.skipped[str(e.filename)] = f"unreadable folder ({e.strerror or type(e).__name__})"

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in searched:
            found.skipped[dirpath] = f"folder link to {real}, already searched (a loop or a second path)"
            dirnames[:] = []
            continue
        searched.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                found.ignored.append(str(path))
                continue
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)  # follows links: a loop or a dangling one fails here
            except OSError as e:
                found.skipped[str(path)] = f"cannot open ({e.strerror or type(e).__name__})"
                continue
            if regular:
                found.images.append(path)
            else:
                found.skipped[str(path)] = "not a regular file"
    return len(found.images) + len(found.skipped) - before


def _download_s3(uri: str, dest: Path, found: ImageInputs) -> None:
    """Objects of an ``s3://bucket/key`` or ``s3://bucket/prefix`` URI with an image suffix, downloaded
    (retried, checked to be images) with the data downloader's transfer loop; failures are skipped."""
    from bincount.data.download import fetch
    from bincount.data.s3 import TransferSummary, check_reachable, list_objects, parse_s3_uri, s3_client, transfer_all

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    check_reachable(client, lambda: client.head_bucket(Bucket=bucket), bucket)
    keys = []
    for o in list_objects(client, bucket, prefix):
        (keys if Path(o["Key"]).suffix.lower() in IMAGE_SUFFIXES else found.ignored).append(o["Key"])
    if not keys:
        raise BincountError(f"{uri}: no image objects there ({', '.join(IMAGE_SUFFIXES)}); check the bucket and prefix")
    summary = transfer_all(keys, str, lambda k: fetch(client, bucket, k, dest / bucket / k), TransferSummary("fetched"),
                           workers=8, description=f"downloading {uri}")
    for key, reason in summary.failed.items():
        found.skipped[f"s3://{bucket}/{key}"] = str(reason)
    found.images += [dest / bucket / k for k in keys if k not in summary.failed]


def find_images(sources: Iterable[str], download_dir: Path | None = None) -> ImageInputs:
    """Image files named by paths, folders (searched recursively, following links; ABID folders through
    ``bin-images/``) and ``s3://`` URIs (downloaded into ``download_dir``), with what was skipped or ignored."""
    found = ImageInputs()
    for src in sources:
        if src.startswith("s3://"):
            download_dir = download_dir or Path(tempfile.mkdtemp(prefix="bincount-s3-"))
            _download_s3(src, download_dir, found)
            continue
        path = Path(src)
        if path.is_dir():
            if not _walk(path / IMAGE_DIR if (path / IMAGE_DIR).is_dir() else path, found):
                raise BincountError(f"{path}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found.images.append(path)
        elif path.is_symlink() or path.exists():
            found.skipped[src] = "cannot open (a dangling link, a link loop, or not a file)"
        else:
            raise BincountError(f"{src}: no such file or folder (give images, folders or s3:// URIs)")
    return found


def known_counts(sources: Iterable[str]) -> dict[str, int]:
    """True counts from the metadata of every ABID-layout folder among ``sources`` (by bin id)."""
    counts: dict[str, int] = {}
    for src in sources:
        root = Path(src)
        if not src.startswith("s3://") and (root / METADATA_DIR).is_dir() and (root / IMAGE_DIR).is_dir():
            records, _ = read_abid(root, check_images=False)
            counts.update({r.id: r.count for r in records})
    return counts


def split_ids(model: str | Path, split: str, manifest: str | Path | None = None) -> set[str]:
    """Ids in one split of the training run of a checkpoint (its ``split_manifest.csv``)."""
    from bincount.data.split import read_manifest
    from bincount.training import _training_manifest

    manifest = Path(manifest) if manifest else _training_manifest(Path(model))
    if manifest is None:
        raise BincountError(f"--split {split}: no split_manifest.csv beside {model}; pass --manifest PATH")
    return {i for i, _, s in read_manifest(manifest) if s == split}


# -- predicting ---------------------------------------------------------------------------------
def predict_images(predictor: Predictor, images: list[Path], truth: dict[str, int] | None = None,
                   batch_size: int = 32, workers: int = 4) -> tuple[list[Prediction], dict[str, str]]:
    """Predictions for every readable image, and the images skipped with the reason."""
    truth = truth or {}
    results: list[Prediction] = []
    skipped: dict[str, str] = {}

    def decode(path: Path):  # in a thread pool: PIL releases the GIL; torch work stays in this thread
        try:
            return predictor.decode(path)
        except ImageError as e:  # corrupt, truncated, too small, no faithful RGB: skip and report, never guess
            skipped[str(path)] = str(e)
            return None

    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    with ThreadPoolExecutor(workers) as pool:
        for batch in progress(batches, total=len(batches), description=f"predicting {len(images)} images"):
            loaded = [(p, im) for p, im in zip(batch, pool.map(decode, batch)) if im is not None]
            if not loaded:
                continue
            probs = predictor.predict([im for _, im in loaded])
            for (path, _), count, p in zip(loaded, predictor.counts(probs), probs):
                results.append(Prediction(path.stem, str(path), count, float(p.max()),
                                          {c: float(q) for c, q in zip(predictor.classes, p)}, truth.get(path.stem)))
    return results, skipped


def write_predictions(predictions: list[Prediction], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [p.row() for p in predictions]
    if out.suffix == ".json":
        out.write_text(json.dumps(rows, indent=1))
    else:
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id"])
            w.writeheader()
            w.writerows(rows)
    return out


def read_predictions(path: str | Path) -> list[Prediction]:
    """Predictions written by ``bincount predict`` (CSV or JSON; a spreadsheet's byte-order mark is fine).
    A file with no predictions is an error: there is nothing to decide on."""
    path = Path(path)
    try:
        text = read_text(path)
        rows = json.loads(text) if path.suffix == ".json" else list(csv.DictReader(text.splitlines()))
        predictions = [Prediction(str(r["id"]).strip(), str(r["image"]), int(r["predicted_count"]),
                                  float(r["confidence"]), {int(k[2:]): float(v) for k, v in r.items() if k.startswith("p_")},
                                  int(r["true_count"]) if str(r.get("true_count") or "").strip() else None)
                       for r in rows]
    except FileNotFoundError:
        raise BincountError(f"no such predictions file {path}; write one with `bincount predict ... --out FILE`") from None
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise BincountError(f"{path} is not a predictions file of `bincount predict` ({type(e).__name__}: {e})") from None
    if not predictions:
        raise BincountError(f"{path} holds no predictions; predict some images first (`bincount predict`)")
    return predictions


def duplicate_ids(predictions: list[Prediction]) -> list[str]:
    """Ids predicted more than once (two images with the same name in different folders)."""
    return sorted(i for i, n in Counter(p.id for p in predictions).items() if n > 1)


def summarize(predictions: list[Prediction], skipped: dict[str, str], ignored: list[str] = ()) -> dict:
    labelled = [p for p in predictions if p.true_count is not None]
    summary = {"images": len(predictions), "skipped": len(skipped), "ignored": len(ignored),
               "duplicate_ids": duplicate_ids(predictions),
               "per_count": {c: sum(p.count == c for p in predictions) for c in sorted({p.count for p in predictions})}}
    if labelled:
        summary["labelled"] = len(labelled)
        summary["accuracy"] = round(sum(p.count == p.true_count for p in labelled) / len(labelled), 4)
    return summary


def _predict(args: argparse.Namespace) -> int:
    found = find_images(args.images)
    images = found.images
    if args.split:
        wanted = split_ids(args.model, args.split, args.manifest)
        images = [p for p in images if p.stem in wanted]
        if not images:
            raise BincountError(f"--split {args.split}: none of the images is in that split of the manifest")
    predictor = load_predictor(args.model, args.backend)
    predictions, skipped = predict_images(predictor, images, known_counts(args.images), args.batch_size, args.workers)
    skipped.update(found.skipped)
    out = write_predictions(predictions, Path(args.out))
    if not args.quiet:
        for p in predictions:
            print(f"{p.id}\t{p.count}\t{p.confidence:.3f}")
    for image, reason in sorted(skipped.items()):
        print(f"skipped {image}: {reason}", file=sys.stderr)
    if found.ignored:
        print(f"ignored {len(found.ignored)} file(s) whose names are not images' (hidden, or not "
              f"{'/'.join(IMAGE_SUFFIXES)}): {', '.join(found.ignored[:5])}{' ...' if len(found.ignored) > 5 else ''}",
              file=sys.stderr)
    summary = summarize(predictions, skipped, found.ignored)
    if summary["duplicate_ids"]:
        print(f"warning: {len(summary['duplicate_ids'])} id(s) predicted from more than one image (same file name): "
              f"{', '.join(summary['duplicate_ids'][:10])}; reconcile decides such a bin once", file=sys.stderr)
    summary["out"] = str(out)
    print(json.dumps(summary), file=sys.stderr)
    if not predictions:
        print(f"error: no image could be read, so {out} holds no predictions", file=sys.stderr)
    # Exit 1 when an input could not be used: the predictions of the rest are written, the gaps are listed.
    return 1 if skipped or not predictions else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="count the items in images, folders or s3:// URIs; write CSV or JSON")
    p.add_argument("model", help="RUN/checkpoints/best.ckpt, a `bincount export` folder, or model.onnx")
    p.add_argument("images", nargs="+", help="image files, folders (ABID folders add true counts), s3:// URIs")
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--out", default="predictions.csv", help="CSV, or JSON when it ends in .json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4, help="threads decoding images")
    p.add_argument("--split", choices=["train", "val", "test"],
                   help="only the images of this split of the checkpoint's training run")
    p.add_argument("--manifest", help="split_manifest.csv for --split (default: the one beside the checkpoint)")
    p.add_argument("--quiet", action="store_true", help="do not print one line per image")
    p.set_defaults(func=_predict)
