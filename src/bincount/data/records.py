"""One record type for a bin, and the reader that turns an ABID-layout folder into records.

An ABID-layout folder holds ``bin-images/<id>.jpg`` and ``metadata/<id>.json``; a folder written by
``bincount prepare`` holds its images as ``{train,valid,test}/<count>/<id>.jpg`` instead. Every other
part of bincount (split, data module, predict, reconcile, serve) takes these records, so the
metadata is parsed here and nowhere else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bincount.counts import CountClasses
from bincount.data.images import IMAGE_SUFFIXES, image_problem
from bincount.errors import BincountError
from bincount.progress import progress

IMAGE_DIR = "bin-images"
NOT_IN_CLASSES = "count not in classes"
LISTED_ABSENT = "listed in file_list but absent"
METADATA_DIR = "metadata"
# `bincount prepare` stores images as <split>/<count>/<id>.jpg (the folders SageMaker channels take)
PREPARED_DIRS = ("train", "valid", "test")


@dataclass(frozen=True)
class Sku:
    asin: str
    name: str
    quantity: int
    weight_lb: float | None = None
    dims_in: tuple[float, float, float] | None = None  # length, width, height in inches


@dataclass(frozen=True)
class BinRecord:
    """A photographed bin: where its image is, how many items it holds, and which SKUs."""

    id: str
    image: str  # a local path or an s3:// URI
    count: int | None  # EXPECTED_QUANTITY; None when unlabelled (prediction input)
    skus: tuple[Sku, ...] = ()

    @property
    def distinct_skus(self) -> int:
        return len(self.skus)


@dataclass
class SkipReport:
    """What the reader left out and why: nothing is dropped silently."""

    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids

    def add(self, reason: str, bin_id: str) -> None:
        self.skipped.setdefault(reason, []).append(bin_id)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in sorted(self.skipped.items())}

    def merge(self, other: SkipReport) -> SkipReport:
        """Add another reader's skips (of another folder) to these."""
        for reason, ids in other.skipped.items():
            self.skipped.setdefault(reason, []).extend(ids)
        return self

    def ids(self) -> set[str]:
        return {i for ids in self.skipped.values() for i in ids}

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "by_reason": self.summary(),
            "ids": {k: sorted(v) for k, v in sorted(self.skipped.items())},
        }


def _quantity(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        return None
    return int(value)


def _dim(d) -> float | None:
    try:
        return float(d["value"])
    except (KeyError, TypeError, ValueError):
        return None


def parse_metadata(meta: dict) -> tuple[int | None, tuple[Sku, ...]]:
    """Count and SKUs of one ABID metadata document.

    The count is ``EXPECTED_QUANTITY``; where that is absent it is the sum of ``quantity`` over
    ``BIN_FCSKU_DATA``. Returns ``(None, skus)`` when neither gives a valid non-negative integer.
    """
    if not isinstance(meta, dict):
        return None, ()
    skus = []
    sku_data = meta.get("BIN_FCSKU_DATA") or {}
    if isinstance(sku_data, dict):
        for asin, s in sku_data.items():
            if not isinstance(s, dict):
                continue
            dims = tuple(_dim(s.get(k)) for k in ("length", "width", "height"))
            skus.append(
                Sku(
                    asin=str(s.get("asin", asin)),
                    name=str(s.get("name") or s.get("normalizedName") or ""),
                    quantity=_quantity(s.get("quantity")) or 0,
                    weight_lb=_dim(s.get("weight")),
                    dims_in=dims if all(d is not None for d in dims) else None,
                )
            )
    count = _quantity(meta.get("EXPECTED_QUANTITY"))
    if count is None and "EXPECTED_QUANTITY" not in meta and isinstance(sku_data, dict) and skus:
        count = sum(s.quantity for s in skus)
    return count, tuple(skus)


def load_file_list(path: str | Path) -> dict[str, int]:
    """Ids of a Udacity-format ``file_list.json`` (``{"1": ["data/metadata/00010.json", ...]}``),
    mapped to the count the list files them under."""
    try:
        doc = json.loads(Path(path).read_bytes())  # bytes: JSON's own encoding detection skips a byte-order mark
    except FileNotFoundError:
        raise BincountError(f"data.file_list: no such file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BincountError(f"data.file_list: {path} is not valid JSON ({e})") from None
    try:
        return {Path(p).stem: int(key) for key, paths in doc.items() for p in paths}
    except (AttributeError, TypeError, ValueError):
        raise BincountError(f'data.file_list: {path} is not a file list ({{"COUNT": ["PATH/ID.json", ...]}})') from None


def _image_index(root: Path) -> dict[str, Path] | None:
    """id -> image file, from ``bin-images/`` or else from the prepared split folders; None when
    the folder has neither. Hidden files (temporary files of a writer) are not images."""
    if (root / IMAGE_DIR).is_dir():
        files = list((root / IMAGE_DIR).iterdir())
    elif any((root / d).is_dir() for d in PREPARED_DIRS):
        files = [p for d in PREPARED_DIRS for p in (root / d).glob("*/*")]
    else:
        return None
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    index: dict[str, Path] = {}
    for p in sorted(images, key=lambda p: IMAGE_SUFFIXES.index(p.suffix.lower())):  # .jpg first
        index.setdefault(p.stem, p)
    return index


def answer_set(classes: Iterable[int] | CountClasses | None) -> CountClasses | None:
    """The classes a reader keeps: a ``CountClasses`` as given, a list of counts as exact counts only."""
    if classes is None or isinstance(classes, CountClasses):
        return classes
    return CountClasses(classes)


def read_abid(
    root: str | Path,
    classes: Iterable[int] | CountClasses | None = None,
    file_list: str | Path | None = None,
    check_images: bool = True,
    workers: int = 8,
) -> tuple[list[BinRecord], SkipReport]:
    """Records of every usable bin in an ABID-layout folder, and a report of what was skipped.

    ``classes`` keeps only bins whose count has a class (a list of counts: those counts; a
    ``CountClasses`` with overflow: also every count above its largest); others are reported as
    ``count not in classes``. ``file_list`` keeps only the ids a Udacity ``file_list.json`` names, and reports a
    bin whose metadata disagrees with the count that list files it under.
    """
    root = Path(root)
    meta_dir, images = root / METADATA_DIR, _image_index(root)
    if not meta_dir.is_dir() or images is None:
        raise BincountError(
            f"data.root: {root} is not an ABID-layout folder (it needs {IMAGE_DIR}/ and {METADATA_DIR}/); "
            "run `bincount download` or point data.root at one, e.g. data.root=../shared/abid/dev-224"
        )
    wanted = answer_set(classes)
    listed = load_file_list(file_list) if file_list else None
    report = SkipReport()

    meta_files = sorted(meta_dir.glob("*.json"))
    image_ids = set(images)
    for orphan in sorted(image_ids - {p.stem for p in meta_files}):
        if listed is None or orphan in listed:
            report.add("metadata missing", orphan)

    candidates: list[BinRecord] = []
    for mf in meta_files:
        bin_id = mf.stem
        if listed is not None and bin_id not in listed:
            continue  # outside the chosen subset: not a defect, so not reported
        try:
            meta = json.loads(mf.read_bytes())  # bytes: a byte-order mark is skipped, as in `bincount download`
        except (json.JSONDecodeError, UnicodeDecodeError):
            report.add("metadata malformed", bin_id)
            continue
        count, skus = parse_metadata(meta)
        if count is None:
            report.add("metadata has no valid count", bin_id)
            continue
        if listed is not None and listed[bin_id] != count:
            report.add("count disagrees with file_list", bin_id)
            continue
        if wanted is not None and not wanted.covers(count):
            report.add(NOT_IN_CLASSES, bin_id)
            continue
        image = images.get(bin_id)
        if image is None:
            report.add("image missing", bin_id)
            continue
        candidates.append(BinRecord(id=bin_id, image=str(image), count=count, skus=skus))
    if listed is not None:
        present = {p.stem for p in meta_files}
        for missing in sorted(set(listed) - present):
            report.add(LISTED_ABSENT, missing)

    if not check_images:
        return candidates, report
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(
            progress(
                pool.map(lambda r: image_problem(r.image), candidates),
                total=len(candidates),
                description=f"checking images in {root.name}",
            )
        )
    records = []
    for rec, problem in zip(candidates, problems):
        if problem:
            report.add(problem, rec.id)
        else:
            records.append(rec)
    return records, report


def folder_ids(records: Iterable[BinRecord], report: SkipReport) -> set[str]:
    """Every id a reader met in a folder: the records it kept and the ids it skipped (not the ids a
    file list names that the folder lacks)."""
    absent = set(report.skipped.get(LISTED_ABSENT, ()))
    return {r.id for r in records} | (report.ids() - absent)


def check_distinct_folders(found: dict[str, set[str]]) -> None:
    """Refuse ids met in more than one folder (``found``: folder -> its ids): one bin would count twice,
    and could sit in training from one folder and in the test split from the other."""
    folders = list(found)
    clashes = []
    for i, a in enumerate(folders):
        for b in folders[i + 1 :]:
            shared = sorted(found[a] & found[b])
            if shared:
                more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
                clashes.append(f"{', '.join(shared[:5])}{more} in both {a} and {b}")
    if clashes:
        raise BincountError(
            "data.root: the same bin id in two folders (" + "; ".join(clashes) + "); "
            "a bin may be in only one of the folders of data.root: remove the copies from one of them"
        )


def read_abid_folders(
    roots: Sequence[str | Path],
    classes: Iterable[int] | CountClasses | None = None,
    file_list: str | Path | None = None,
    check_images: bool = True,
) -> tuple[list[BinRecord], SkipReport]:
    """``read_abid`` over several ABID-layout folders, as one dataset; an id in two folders is an error."""
    records: list[BinRecord] = []
    report = SkipReport()
    found: dict[str, set[str]] = {}
    absent: set[str] | None = None  # ids of the file list in none of the folders
    for root in roots:
        got, skipped = read_abid(root, classes, file_list, check_images)
        found[str(root)] = folder_ids(got, skipped)
        records += got
        missing = set(skipped.skipped.pop(LISTED_ABSENT, ()))
        absent = missing if absent is None else absent & missing
        report.merge(skipped)
    check_distinct_folders(found)
    for bin_id in sorted(absent or ()):
        report.add(LISTED_ABSENT, bin_id)
    return records, report


def class_counts(records: Iterable[BinRecord]) -> dict[int, int]:
    return dict(sorted(Counter(r.count for r in records).items()))


def counts_per_class(records: Iterable[BinRecord], counts: CountClasses) -> dict[str, int]:
    """Images per class of an answer set, named as ``counts.names`` names them (``"6+"`` for the overflow
    class), in class order; every class listed, with 0 where none."""
    per = Counter(counts.index(r.count) for r in records)
    return {name: per.get(i, 0) for i, name in enumerate(counts.names)}
