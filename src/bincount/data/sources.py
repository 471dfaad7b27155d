"""Where images to predict on come from: image files, folders (an ABID folder through its
``bin-images/``) and ``s3://`` URIs, downloaded with the data downloader's transfer loop."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bincount.data.images import IMAGE_SUFFIXES
from bincount.data.records import IMAGE_DIR, METADATA_DIR, read_abid
from bincount.errors import BincountError


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


def download_s3_images(uri: str, dest: Path, found: ImageInputs) -> None:
    """Objects of an ``s3://bucket/key`` or ``s3://bucket/prefix`` URI with an image suffix, downloaded
    (retried, checked to be images) with the data downloader's transfer loop; failures are skipped."""
    from bincount.data.download import fetch
    from bincount.data.s3 import TransferSummary, check_reachable, list_objects, parse_s3_uri, s3_client, transfer_all

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    check_reachable(client, lambda c: c.head_bucket(Bucket=bucket), bucket)
    keys = []
    for o in list_objects(client, bucket, prefix):
        (keys if Path(o["Key"]).suffix.lower() in IMAGE_SUFFIXES else found.ignored).append(o["Key"])
    if not keys:
        raise BincountError(f"{uri}: no image objects there ({', '.join(IMAGE_SUFFIXES)}); check the bucket and prefix")
    summary = transfer_all(
        keys,
        str,
        lambda k: fetch(client, bucket, k, dest / bucket / k),
        TransferSummary("fetched"),
        workers=8,
        description=f"downloading {uri}",
    )
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
            download_s3_images(src, download_dir, found)
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
