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
import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bincount.data.records import IMAGE_DIR, IMAGE_SUFFIXES, METADATA_DIR, read_abid
from bincount.errors import BincountError
from bincount.progress import progress
from bincount.serve.predictor import BACKENDS, Predictor, load_predictor

log = logging.getLogger(__name__)


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
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _download_s3(uri: str, dest: Path) -> list[Path]:
    """Objects of an ``s3://bucket/key`` or ``s3://bucket/prefix`` URI with an image suffix, downloaded
    (retried, checked to be images) with the data downloader's transfer loop; failures are logged."""
    from bincount.data.download import fetch
    from bincount.data.s3 import TransferSummary, check_reachable, list_objects, parse_s3_uri, s3_client, transfer_all

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    check_reachable(client, lambda: client.head_bucket(Bucket=bucket), bucket)
    keys = [o["Key"] for o in list_objects(client, bucket, prefix) if Path(o["Key"]).suffix.lower() in IMAGE_SUFFIXES]
    if not keys:
        raise BincountError(f"{uri}: no .jpg/.jpeg/.png objects there; check the bucket and prefix")
    summary = transfer_all(keys, str, lambda k: fetch(client, bucket, k, dest / bucket / k), TransferSummary("fetched"),
                           workers=8, description=f"downloading {uri}")
    for line in summary.lines()[2:] if summary.failed else []:
        log.warning("%s: %s", uri, line)
    return [dest / bucket / k for k in keys if k not in summary.failed]


def find_images(sources: Iterable[str], download_dir: Path | None = None) -> list[Path]:
    """Image files named by paths, folders (searched recursively; ABID folders through ``bin-images/``)
    and ``s3://`` URIs (downloaded into ``download_dir``)."""
    found: list[Path] = []
    for src in sources:
        if src.startswith("s3://"):
            download_dir = download_dir or Path(tempfile.mkdtemp(prefix="bincount-s3-"))
            found += _download_s3(src, download_dir)
            continue
        path = Path(src)
        if path.is_dir():
            images = _images_in(path / IMAGE_DIR if (path / IMAGE_DIR).is_dir() else path)
            if not images:
                raise BincountError(f"{path}: no .jpg/.jpeg/.png images in this folder")
            found += images
        elif path.is_file():
            found.append(path)
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
        except Exception as e:  # corrupt, truncated or not an image: skip and report, never guess
            skipped[str(path)] = f"unreadable image ({type(e).__name__})"
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
    """Predictions written by ``bincount predict`` (CSV or JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BincountError(f"no such predictions file {path}; write one with `bincount predict ... --out FILE`") from None
    rows = json.loads(text) if path.suffix == ".json" else list(csv.DictReader(text.splitlines()))
    try:
        return [Prediction(str(r["id"]), str(r["image"]), int(r["predicted_count"]), float(r["confidence"]),
                           {int(k[2:]): float(v) for k, v in r.items() if k.startswith("p_")},
                           int(r["true_count"]) if str(r.get("true_count", "")).strip() else None)
                for r in rows]
    except (KeyError, ValueError, TypeError) as e:
        raise BincountError(f"{path} is not a predictions file of `bincount predict` ({type(e).__name__}: {e})") from None


def summarize(predictions: list[Prediction], skipped: dict[str, str]) -> dict:
    labelled = [p for p in predictions if p.true_count is not None]
    summary = {"images": len(predictions), "skipped": len(skipped),
               "per_count": {c: sum(p.count == c for p in predictions) for c in sorted({p.count for p in predictions})}}
    if labelled:
        summary["labelled"] = len(labelled)
        summary["accuracy"] = round(sum(p.count == p.true_count for p in labelled) / len(labelled), 4)
    return summary


def _predict(args: argparse.Namespace) -> int:
    images = find_images(args.images)
    if args.split:
        wanted = split_ids(args.model, args.split, args.manifest)
        images = [p for p in images if p.stem in wanted]
        if not images:
            raise BincountError(f"--split {args.split}: none of the images is in that split of the manifest")
    predictor = load_predictor(args.model, args.backend)
    predictions, skipped = predict_images(predictor, images, known_counts(args.images), args.batch_size, args.workers)
    out = write_predictions(predictions, Path(args.out))
    if not args.quiet:
        for p in predictions:
            print(f"{p.id}\t{p.count}\t{p.confidence:.3f}")
    for image, reason in sorted(skipped.items()):
        print(f"skipped {image}: {reason}", file=sys.stderr)
    summary = summarize(predictions, skipped)
    summary["out"] = str(out)
    print(json.dumps(summary), file=sys.stderr)
    return 0


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
