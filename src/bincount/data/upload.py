"""`bincount upload`: sync a prepared dataset folder to ``s3://bucket/prefix`` for SageMaker channels.

Idempotent: a file whose remote object has the same size and ETag is not sent again. The ETag of
an object S3 stored in one part is the MD5 of its bytes; of one stored in parts it is the MD5 of the
parts' MD5s, "-" and the number of parts. Uploads here use fixed part sizes, so the expected ETag is
computed locally (objects uploaded by other tools with other part sizes, or encrypted with SSE-KMS,
are sent once more). Hidden files (temporary files, caches, state) are not uploaded. Retries are
botocore's (see bincount.data.s3).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from bincount.data.s3 import TransferSummary, check_reachable, list_objects, parse_s3_uri, s3_client, transfer_all
from bincount.errors import BincountError

PART_SIZE = 64 * 1024 * 1024  # one part up to this size; larger files go in parts of this size


def local_etag(path: Path, part_size: int = PART_SIZE) -> str:
    """The ETag S3 gives ``path`` when uploaded as here with this part size."""
    digests = []
    with path.open("rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.md5(chunk))
    if len(digests) <= 1:
        return (digests[0] if digests else hashlib.md5()).hexdigest()
    return f"{hashlib.md5(b''.join(d.digest() for d in digests)).hexdigest()}-{len(digests)}"


def local_files(root: Path) -> dict[str, Path]:
    """Relative POSIX name -> file, for every non-hidden file under ``root`` (links followed)."""
    files = {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                path = Path(folder) / name
                files[path.relative_to(root).as_posix()] = path
    return files


def remote_objects(client, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Key -> (size, ETag) of every object under ``prefix``."""
    return {
        o["Key"]: (o["Size"], o["ETag"].strip('"'))
        for o in list_objects(client, bucket, f"{prefix}/" if prefix else "")
    }


def _put(client, path: Path, bucket: str, key: str, size: int, part_size: int) -> None:
    if size <= part_size:  # one request (botocore rewinds the file to retry it)
        with path.open("rb") as f:
            client.put_object(Bucket=bucket, Key=key, Body=f)
        return
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, use_threads=False)
    client.upload_file(str(path), bucket, key, Config=config)  # each part retried by botocore


def upload(
    local: str | Path,
    uri: str,
    endpoint_url: str | None = None,
    workers: int = 16,
    delete: bool = False,
    client=None,
    part_size: int = PART_SIZE,
) -> TransferSummary:
    """Send every file under ``local`` that differs from its object under ``uri``; with ``delete``
    also remove objects under ``uri`` that have no local file."""
    local = Path(local)
    if not local.is_dir():
        raise BincountError(f"upload: {local} is not a folder; prepare one first (bincount prepare SRC OUT)")
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client(endpoint_url, workers=workers)
    check_reachable(client, lambda c: c.list_objects_v2(Bucket=bucket, MaxKeys=1), bucket)
    files = local_files(local)
    key_of = {name: f"{prefix}/{name}" if prefix else name for name in files}
    remote = remote_objects(client, bucket, prefix)

    def send(name: str) -> int | None:
        path, key = files[name], key_of[name]
        size = path.stat().st_size
        if remote.get(key) == (size, local_etag(path, part_size)):
            return None
        _put(client, path, bucket, key, size, part_size)
        return size

    summary = TransferSummary(
        "uploaded", extra={"destination": f"s3://{bucket}/{prefix}", "endpoint": client.meta.endpoint_url}
    )
    transfer_all(sorted(files), str, send, summary, workers, f"uploading {local} to s3://{bucket}/{prefix}")
    extra = sorted(set(remote) - set(key_of.values()))
    if delete and extra:
        for i in range(0, len(extra), 1000):
            batch = {"Objects": [{"Key": k} for k in extra[i : i + 1000]], "Quiet": True}
            client.delete_objects(Bucket=bucket, Delete=batch)
    summary.extra["deleted" if delete else "remote_only"] = len(extra)
    return summary
