"""Where images to predict on come from: image files, folders (an ABID folder through its
``bin-images/``) and ``s3://`` URIs, downloaded with the data downloader's transfer loop."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bincount.data.records import IMAGE_DIR, IMAGE_SUFFIXES, METADATA_DIR, read_abid
from bincount.errors import BincountError

log = logging.getLogger(__name__)


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def download_s3_images(uri: str, dest: Path) -> list[Path]:
    """Objects of an ``s3://bucket/key`` or ``s3://bucket/prefix`` URI with an image suffix, downloaded
    (retried, checked to be images) with the data downloader's transfer loop; failures are logged."""
    from bincount.data.download import fetch
    from bincount.data.s3 import TransferSummary, check_reachable, list_objects, parse_s3_uri, s3_client, transfer_all

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    check_reachable(client, lambda c: c.head_bucket(Bucket=bucket), bucket)
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
            found += download_s3_images(src, download_dir)
            continue
        path = Path(src)
        if path.is_dir():
            images = images_in(path / IMAGE_DIR if (path / IMAGE_DIR).is_dir() else path)
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
