"""`bincount download`: fetch ABID images and metadata from the public bucket ``aft-vbi-pds`` (or any
S3-compatible server) into an ABID-layout folder, and ``ensure_dataset`` for a first training run.

Every file is written to a temporary name and renamed when complete and valid (a decodable image,
parseable JSON), so an interrupted run leaves no partial file; a rerun fetches only what is missing
or whose size differs from the server's. ``download_report.json`` in the folder records the outcome.
Retries are botocore's and s3transfer's (see bincount.data.s3).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
from boto3.s3.transfer import TransferConfig

from bincount.data.files import atomic_write, remove_stale_temps
from bincount.data.images import image_problem
from bincount.data.records import IMAGE_DIR, METADATA_DIR, load_file_list, parse_metadata
from bincount.data.s3 import (
    TRANSFER_ERRORS,
    TransferError,
    TransferSummary,
    Unreachable,
    attempts_of,
    check_reachable,
    list_objects,
    s3_client,
    transfer_all,
)
from bincount.errors import BincountError
from bincount.progress import progress

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "aft-vbi-pds"
SUBSET_RESOURCE = "abid_subset_10441.json"  # ids by count of the capstones' 10,441-image subset
REPORT_NAME = "download_report.json"
SCAN_DIR = ".metadata-scan"  # metadata read while drawing a stratified subset (reused by reruns)


@contextmanager
def default_subset() -> Iterator[Path]:
    """The shipped id list of the 10,441-image subset, as a file path."""
    with resources.as_file(resources.files("bincount") / "resources" / SUBSET_RESOURCE) as path:
        yield path


def subset_ids(file_list: str | Path | None = None, classes: Sequence[int] | None = None) -> dict[str, int]:
    """Ids (to the count they are listed under) of a Udacity-format file list, the default subset if None."""
    if file_list:
        ids = load_file_list(file_list)
    else:
        with default_subset() as path:
            ids = load_file_list(path)
    return {i: c for i, c in ids.items() if classes is None or c in classes}


def keys_for(bin_id: str) -> tuple[str, str]:
    return f"{IMAGE_DIR}/{bin_id}.jpg", f"{METADATA_DIR}/{bin_id}.json"


def _invalid(key: str, path: Path) -> str | None:
    """Why a fetched file is unusable (corrupt on the server), or None."""
    if key.endswith(".json"):
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            return "corrupt on the server (metadata is not valid JSON)"
        return None
    problem = image_problem(path)
    return f"corrupt on the server ({problem})" if problem else None


def fetch(client, bucket: str, key: str, target: Path) -> int | None:
    """Fetch one object to ``target`` atomically; None when a local copy of the same size exists. The
    download restarts when its body is cut off (s3transfer); a file that arrives whole but does not
    decode or parse is refused, never installed."""
    if target.exists():
        if client.head_object(Bucket=bucket, Key=key)["ContentLength"] == target.stat().st_size:
            return None
    config = TransferConfig(use_threads=False, num_download_attempts=attempts_of(client))
    with atomic_write(target) as tmp:
        with tmp.open("wb") as f:
            client.download_fileobj(bucket, key, f, Config=config)
            size = f.tell()
        problem = _invalid(key, tmp)
        if problem:
            raise TransferError(problem)
    return size


def download(
    dest: str | Path,
    ids: Mapping[str, int] | Sequence[str],
    bucket: str = DEFAULT_BUCKET,
    client=None,
    workers: int = 32,
) -> TransferSummary:
    """Fetch ``bin-images/<id>.jpg`` and ``metadata/<id>.json`` of every id into ``dest``."""
    dest = Path(dest)
    client = client or s3_client(unsigned=True, workers=workers)
    keys = [k for bin_id in sorted(ids) for k in keys_for(bin_id)]
    if not keys:
        raise BincountError("nothing to download: the id list is empty (check --file-list and --classes)")
    check_reachable(client, lambda c: c.get_object(Bucket=bucket, Key=keys[0], Range="bytes=0-0"), bucket)
    for sub in (IMAGE_DIR, METADATA_DIR):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest / sub)
    summary = TransferSummary(
        "fetched", extra={"source": f"s3://{bucket}", "endpoint": client.meta.endpoint_url, "ids": len(ids)}
    )
    transfer_all(
        keys,
        str,
        lambda key: fetch(client, bucket, key, dest / key),
        summary,
        workers,
        f"downloading {len(ids)} bins to {dest}",
    )
    (dest / REPORT_NAME).write_text(json.dumps({**summary.to_dict(), "complete": summary.ok}, indent=2))
    return summary


# -- a stratified subset drawn from the bucket's metadata ---------------------------------------
def _listed_ids(client, bucket: str, scan: Path) -> list[str]:
    """Every id under ``metadata/`` in the bucket (cached in the scan folder: the bucket is static)."""
    cache = scan / "ids.txt"
    if cache.exists():
        return cache.read_text().split()
    ids = sorted(
        Path(o["Key"]).stem for o in list_objects(client, bucket, f"{METADATA_DIR}/") if o["Key"].endswith(".json")
    )
    scan.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache) as tmp:
        tmp.write_text("\n".join(ids))
    return ids


def draw_stratified(
    dest: str | Path,
    classes: Sequence[int],
    per_class: int,
    bucket: str = DEFAULT_BUCKET,
    client=None,
    seed: int = 42,
    workers: int = 32,
) -> dict[str, int]:
    """Up to ``per_class`` ids of each count, read from the bucket's metadata in a seeded random
    order; writes the choice as ``<dest>/file_list.json`` (Udacity format) and returns it."""
    dest, scan = Path(dest), Path(dest) / SCAN_DIR
    client = client or s3_client(unsigned=True, workers=workers)
    check_reachable(client, lambda c: c.list_objects_v2(Bucket=bucket, Prefix=f"{METADATA_DIR}/", MaxKeys=1), bucket)
    ids = _listed_ids(client, bucket, scan)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    remove_stale_temps(scan)

    def count_of(bin_id: str) -> int | None:
        path = scan / f"{bin_id}.json"
        try:
            if not path.exists():
                fetch(client, bucket, f"{METADATA_DIR}/{bin_id}.json", path)
            return parse_metadata(json.loads(path.read_bytes()))[0]
        except (*TRANSFER_ERRORS, ValueError):
            return None

    chosen: dict[int, list[str]] = {c: [] for c in classes}
    unreadable = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        batches = (order[i : i + 8 * workers] for i in range(0, len(order), 8 * workers))
        counts = (c for batch in batches for c in pool.map(count_of, batch))
        for bin_id, count in progress(zip(order, counts), total=len(order), description="reading bucket metadata"):
            unreadable += count is None
            if count in chosen and len(chosen[count]) < per_class:
                chosen[count].append(bin_id)
                if all(len(v) >= per_class for v in chosen.values()):
                    break
    if unreadable:
        log.warning(
            "download: %d metadata file(s) could not be read while drawing the subset; they were passed over",
            unreadable,
        )
    for c, got in chosen.items():
        if len(got) < per_class:
            log.warning(
                "download: only %d bins with count %d in s3://%s (asked for %d)", len(got), c, bucket, per_class
            )
    doc = {str(c): [f"{METADATA_DIR}/{i}.json" for i in sorted(v)] for c, v in chosen.items()}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "file_list.json").write_text(json.dumps(doc, indent=1))
    return {i: c for c, v in chosen.items() for i in v}


# -- first run ------------------------------------------------------------------------------------
def ensure_dataset(root: str | Path, file_list: str | Path | None = None) -> None:
    """Download the default subset (or ``file_list``) into ``root`` unless it already holds a dataset.

    A folder with metadata counts as a dataset unless an earlier download into it was incomplete,
    in which case the download resumes.
    """
    root = Path(root)
    report = root / REPORT_NAME
    has_metadata = (root / METADATA_DIR).is_dir() and any((root / METADATA_DIR).glob("*.json"))
    if has_metadata and (not report.exists() or json.loads(report.read_text()).get("complete")):
        return
    ids = subset_ids(file_list)
    log.info(
        "data.root %s holds no dataset yet: downloading %d bins from s3://%s (data.download_to=null turns this off)",
        root,
        len(ids),
        DEFAULT_BUCKET,
    )
    how = "point data.root at an ABID-layout folder (e.g. data.root=../shared/abid/dev-224)"
    try:
        summary = download(root, ids)
    except Unreachable as e:
        raise BincountError(
            f"no dataset in {root} and it cannot be downloaded ({e.cause}); {how}, or run "
            "`bincount download` where there is internet"
        ) from None
    except BincountError as e:
        raise BincountError(f"no dataset in {root} and downloading one failed ({e}); {how}") from None
    for line in summary.lines():
        log.info("download: %s", line)
    if summary.done + summary.skipped == 0:
        raise BincountError(f"no dataset in {root}: all {len(summary.failed)} downloads failed; {how}")
