"""``bincount predict MODEL IMAGES...``: counts for image files, folders or ``s3://`` URIs, written
as CSV or JSON with class probabilities and confidence.

A folder in the ABID layout (``bin-images/`` + ``metadata/``) also gives each image its true count
(``true_count``), which reconcile uses to measure its decisions; ``--split val`` keeps only the
images of one split of the run the checkpoint came from (to choose a threshold on validation data).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bincount.data.files import read_text
from bincount.data.images import ImageError
from bincount.data.sources import find_images, known_counts
from bincount.data.split import read_manifest
from bincount.errors import BincountError
from bincount.layout import manifest_of_checkpoint
from bincount.progress import progress
from bincount.serve.predictor import Predictor, load_predictor


@dataclass
class Prediction:
    id: str
    image: str
    count: int
    confidence: float
    probabilities: dict[int, float]
    true_count: int | None = None

    def row(self) -> dict:
        row = {
            "id": self.id,
            "image": self.image,
            "predicted_count": self.count,
            "confidence": round(self.confidence, 6),
        }
        row.update({f"p_{c}": round(p, 6) for c, p in self.probabilities.items()})
        row["true_count"] = "" if self.true_count is None else self.true_count
        return row


def split_ids(model: str | Path, split: str, manifest: str | Path | None = None) -> set[str]:
    """Ids in one split of the training run of a checkpoint (its ``split_manifest.csv``)."""
    manifest = Path(manifest) if manifest else manifest_of_checkpoint(model)
    if manifest is None:
        raise BincountError(f"--split {split}: no split_manifest.csv beside {model}; pass --manifest PATH")
    return {i for i, _, s in read_manifest(manifest) if s == split}


# -- predicting ---------------------------------------------------------------------------------
def predict_images(
    predictor: Predictor,
    images: list[Path],
    truth: dict[str, int] | None = None,
    batch_size: int = 32,
    workers: int = 4,
) -> tuple[list[Prediction], dict[str, str]]:
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

    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    with ThreadPoolExecutor(workers) as pool:
        for batch in progress(batches, total=len(batches), description=f"predicting {len(images)} images"):
            loaded = [(p, im) for p, im in zip(batch, pool.map(decode, batch)) if im is not None]
            if not loaded:
                continue
            probs = predictor.predict([im for _, im in loaded])
            for (path, _), count, p in zip(loaded, predictor.counts(probs), probs):
                results.append(
                    Prediction(
                        path.stem,
                        str(path),
                        count,
                        float(p.max()),
                        {c: float(q) for c, q in zip(predictor.classes, p)},
                        truth.get(path.stem),
                    )
                )
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
        predictions = [
            Prediction(
                str(r["id"]).strip(),
                str(r["image"]),
                int(r["predicted_count"]),
                float(r["confidence"]),
                {int(k[2:]): float(v) for k, v in r.items() if k.startswith("p_")},
                int(r["true_count"]) if str(r.get("true_count") or "").strip() else None,
            )
            for r in rows
        ]
    except FileNotFoundError:
        raise BincountError(
            f"no such predictions file {path}; write one with `bincount predict ... --out FILE`"
        ) from None
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise BincountError(
            f"{path} is not a predictions file of `bincount predict` ({type(e).__name__}: {e})"
        ) from None
    if not predictions:
        raise BincountError(f"{path} holds no predictions; predict some images first (`bincount predict`)")
    return predictions


def duplicate_ids(predictions: list[Prediction]) -> list[str]:
    """Ids predicted more than once (two images with the same name in different folders)."""
    return sorted(i for i, n in Counter(p.id for p in predictions).items() if n > 1)


def summarize(predictions: list[Prediction], skipped: dict[str, str], ignored: list[str] = ()) -> dict:
    labelled = [p for p in predictions if p.true_count is not None]
    summary = {
        "images": len(predictions),
        "skipped": len(skipped),
        "ignored": len(ignored),
        "duplicate_ids": duplicate_ids(predictions),
        "per_count": {c: sum(p.count == c for p in predictions) for c in sorted({p.count for p in predictions})},
    }
    if labelled:
        summary["labelled"] = len(labelled)
        summary["accuracy"] = round(sum(p.count == p.true_count for p in labelled) / len(labelled), 4)
    return summary


def predict(
    model: str | Path,
    sources: list[str],
    out: str | Path,
    backend: str = "torch",
    split: str | None = None,
    manifest: str | Path | None = None,
    batch_size: int = 32,
    workers: int = 4,
) -> tuple[list[Prediction], dict]:
    """Count the items in every image of ``sources`` (files, folders, s3:// URIs) and write the predictions
    to ``out`` (CSV, or JSON when it ends in .json). ``split`` keeps only the images of one split of the
    checkpoint's training run. Returns the predictions and a summary (with the skipped images: unreadable
    ones and entries of the sources that cannot be opened, and the files ignored for their names)."""
    found = find_images(sources)
    images = found.images
    if split:
        wanted = split_ids(model, split, manifest)
        images = [p for p in images if p.stem in wanted]
        if not images:
            raise BincountError(f"--split {split}: none of the images is in that split of the manifest")
    predictor = load_predictor(model, backend)
    predictions, skipped = predict_images(predictor, images, known_counts(sources), batch_size, workers)
    skipped.update(found.skipped)
    summary = summarize(predictions, skipped, found.ignored)
    summary["out"] = str(write_predictions(predictions, Path(out)))
    summary["skipped_images"] = dict(sorted(skipped.items()))
    summary["ignored_files"] = found.ignored
    return predictions, summary
