"""``bincount predict MODEL IMAGES...``: counts for image files, folders or ``s3://`` URIs, written
as CSV or JSON with class probabilities and confidence.

Each row has ``predicted_count`` (the exact count), or, from a model with the overflow class, an empty
``predicted_count`` and ``at_least`` = K + 1 ("more than K"); the probability columns are named by class
(``p_0`` ... ``p_5``, ``p_6+``). Files written before the overflow class (no ``at_least``) read as before.

A folder in the ABID layout (``bin-images/`` + ``metadata/``) also gives each image its true count
(``true_count``), which reconcile uses to measure its decisions; ``--split val`` keeps only the
images of one split of the run the checkpoint came from (to choose a threshold on validation data).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bincount.counts import CountClasses
from bincount.data.files import read_text
from bincount.data.images import ImageError
from bincount.data.sources import find_images, known_counts
from bincount.data.split import read_manifest
from bincount.errors import BincountError
from bincount.layout import manifest_of_checkpoint
from bincount.progress import progress
from bincount.serve.predictor import Predictor, load_predictor


def classes_of(names: Iterable) -> CountClasses:
    """The answer set named by a prediction's probability keys (``CountClasses.names``: ``"1"``, ...,
    ``"5"``, and ``"6+"`` for "more than 5"); integer keys are read as names."""
    names = [str(n).strip() for n in names]
    exact = [n for n in names if not n.endswith("+")]
    try:
        counts = CountClasses([int(n) for n in exact], overflow=len(exact) < len(names))
    except ValueError:
        counts = None
    if counts is None or sorted(counts.names) != sorted(names):
        raise BincountError(
            f"class probabilities {names or 'none'}: need one per count the model makes (p_1 ... p_5), "
            "and at most one 'more than K' class named K+1 followed by '+' (p_6+)"
        )
    return counts


def optional_int(value) -> int | None:
    """An optional integer as CSV (``""``) and JSON (``null``) write it; 0 is a value, not a blank."""
    if value is None or str(value).strip() == "":
        return None
    return int(str(value).strip())


@dataclass
class Prediction:
    """One image's prediction: an exact ``count``, or, for the class "more than K", no count and
    ``at_least`` = K + 1. ``probabilities`` are keyed by class name (``CountClasses.names``, in class
    order; integer keys are read as names), and name the model's answer set (``classes``)."""

    id: str
    image: str
    count: int | None
    confidence: float
    probabilities: dict[str, float]
    true_count: int | None = None
    at_least: int | None = None
    classes: CountClasses = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        probabilities = {str(k).strip(): float(v) for k, v in self.probabilities.items()}
        self.classes = classes_of(probabilities)
        self.probabilities = {n: probabilities[n] for n in self.classes.names}
        exact = self.at_least is None and self.count in self.classes.exact
        more = self.count is None and self.classes.overflow and self.at_least == self.classes.at_least
        if not (exact or more):
            raise BincountError(
                f"prediction {self.id}: predicted_count {self.count} / at_least {self.at_least} is not an "
                f"answer of its classes ({self.classes})"
            )

    @classmethod
    def from_probabilities(
        cls, id: str, image: str, classes: CountClasses, probabilities, true_count: int | None = None
    ) -> Prediction:
        """The prediction of one image from its class probabilities (one per class of ``classes``)."""
        index = int(np.argmax(probabilities))
        answer = classes.describe(index)
        return cls(
            id,
            image,
            answer.get("count"),
            float(probabilities[index]),
            {n: float(q) for n, q in zip(classes.names, probabilities, strict=True)},
            true_count,
            answer.get("at_least"),
        )

    @property
    def index(self) -> int:
        """The predicted class, an index into ``classes.names``."""
        return self.classes.overflow_index if self.at_least is not None else self.classes.exact.index(self.count)

    @property
    def name(self) -> str:
        """The answer as one word: ``"3"``, or ``"6+"`` for "more than 5"."""
        return self.classes.names[self.index]

    @property
    def right(self) -> bool | None:
        """Whether the predicted class is the bin's true class (a true count the model has no class for
        is never right); None without a true count."""
        return None if self.true_count is None else self.classes.index(self.true_count) == self.index

    def row(self) -> dict:
        row = {
            "id": self.id,
            "image": self.image,
            "predicted_count": self.count,  # empty for "more than K" ...
            "at_least": self.at_least,  # ... which says K + 1 here
            "confidence": round(self.confidence, 6),
        }
        row.update({f"p_{name}": round(p, 6) for name, p in self.probabilities.items()})
        row["true_count"] = self.true_count
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
            results += [
                Prediction.from_probabilities(path.stem, str(path), predictor.counts, p, truth.get(path.stem))
                for (path, _), p in zip(loaded, probs, strict=True)
            ]
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
                optional_int(r["predicted_count"]),
                float(r["confidence"]),
                {k[2:]: float(v) for k, v in r.items() if k.startswith("p_")},
                optional_int(r.get("true_count")),
                optional_int(r.get("at_least")),  # absent in files older than the overflow class
            )
            for r in rows
        ]
    except BincountError as e:
        raise BincountError(f"{path}: {e}") from None
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
    per_class = Counter((p.index, p.name) for p in predictions)
    summary = {
        "images": len(predictions),
        "skipped": len(skipped),
        "ignored": len(ignored),
        "duplicate_ids": duplicate_ids(predictions),
        "per_count": {name: n for (_, name), n in sorted(per_class.items())},  # "6+": more than 5
    }
    if labelled:
        summary["labelled"] = len(labelled)
        summary["accuracy"] = round(sum(p.right for p in labelled) / len(labelled), 4)
        # bins whose true count this model has no class for (a 1-5 model shown 12 items): always wrong
        summary["outside_model_counts"] = sum(not p.classes.covers(p.true_count) for p in labelled)
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
