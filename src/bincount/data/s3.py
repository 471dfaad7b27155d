"""What download and upload share: an S3 client for any S3-compatible endpoint, with botocore's own
retries, a parallel transfer loop with a progress bar, and the summary it prints.

The endpoint is ``--endpoint-url``, else boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
else AWS. Retries are botocore's ``standard`` mode (exponential backoff with jitter on throttling,
5xx answers and dropped connections, up to ``attempts`` tries per request) and, for a body cut off
while downloading, s3transfer's own (which restarts the download): nothing here retries by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TypeVar

import boto3
from boto3.exceptions import Boto3Error
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError

from bincount.errors import BincountError
from bincount.progress import progress

log = logging.getLogger(__name__)
T = TypeVar("T")

# tries of the one request that checks the endpoint before a transfer: an unreachable endpoint is said at once
PREFLIGHT_ATTEMPTS = 2


class Unreachable(BincountError):
    """No S3 endpoint answered; ``cause`` says which and why, in a few words."""

    def __init__(self, cause: str):
        self.cause = cause
        super().__init__(
            f"{cause}; check the network, or point --endpoint-url / AWS_ENDPOINT_URL_S3 at a reachable S3 server"
        )


class TransferError(Exception):
    """A file that could not be transferred; the message is the reason shown in the summary."""


# What a failed transfer of one file raises once botocore and s3transfer have given up: the file is
# reported as failed (with ``reason``), the others go on.
TRANSFER_ERRORS = (
    TransferError,
    ClientError,
    BotoCoreError,
    Boto3Error,
    RetriesExceededError,
    S3DownloadFailedError,
    OSError,
)


def s3_client(endpoint_url: str | None = None, unsigned: bool = False, workers: int = 16, attempts: int = 5):
    """An S3 client with botocore's standard retry mode (``attempts`` tries per request); ``unsigned`` sends
    anonymous requests (public buckets need no credentials)."""
    options = dict(
        max_pool_connections=max(10, workers),
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    if unsigned:
        options["signature_version"] = UNSIGNED
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=session.region_name or "us-east-1",
        config=Config(**options),
    )


def attempts_of(client) -> int:
    """How many tries the client's retry configuration allows per request."""
    return int((client.meta.config.retries or {}).get("max_attempts", 5))


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not uri.startswith("s3://") or not uri[5:].split("/")[0]:
        raise BincountError(f"{uri!r} is not an S3 URI; write it as s3://bucket/prefix")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def reason(e: BaseException) -> str:
    """A short reason for the summary: the S3 error code, or the exception's message."""
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = err.get("Code", "?")
        return {
            "NoSuchKey": "missing on the server (NoSuchKey)",
            "404": "missing on the server (404)",
            "403": "access denied (403)",
        }.get(code, f"{code}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(e, RetriesExceededError):
        return f"gave up after every retry ({type(e.last_exception).__name__})"
    return str(e) or type(e).__name__


def list_objects(client, bucket: str, prefix: str) -> Iterator[dict]:
    """Every object under ``prefix`` (ListObjectsV2 pages)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def check_reachable(client, request: Callable[[object], object], bucket: str) -> None:
    """One request before a transfer, so that no network, no credentials or no bucket is one clear
    error up front instead of thousands of identical failures. ``request(c)`` makes it with ``c``: a
    copy of ``client`` that gives up after a couple of tries, so an unreachable endpoint is said at once."""
    endpoint = client.meta.endpoint_url
    quick = client.meta.config.merge(Config(retries={"max_attempts": PREFLIGHT_ATTEMPTS, "mode": "standard"}))
    probe = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=client.meta.region_name, config=quick
    )
    try:
        request(probe)
    except NoCredentialsError:
        raise BincountError(
            "no AWS credentials found: run `aws configure`, or set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from None
    except (BotoConnectionError, HTTPClientError) as e:
        raise Unreachable(f"cannot reach the S3 endpoint {endpoint} ({type(e).__name__})") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code == "NoSuchBucket":
            raise BincountError(
                f"bucket {bucket} does not exist at {endpoint}; create it (aws s3 mb s3://{bucket}) or name another"
            ) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise BincountError(
                f"access to bucket {bucket} at {endpoint} was denied ({code}); check the "
                "credentials and the bucket policy"
            ) from None
        # other errors (a missing key, say) are reported per file by the transfer itself
    except BotoCoreError as e:
        raise BincountError(f"S3 at {endpoint}: {e}") from None


@dataclass
class TransferSummary:
    """What a transfer did: sent (with bytes), skipped as already up to date, failed with reasons."""

    verb: str  # "fetched" / "uploaded"
    done: int = 0
    bytes: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {
            self.verb: self.done,
            "bytes": self.bytes,
            "skipped": self.skipped,
            "failed": dict(sorted(self.failed.items())),
            "seconds": round(self.seconds, 2),
            "files_per_s": round(self.done / self.seconds, 1) if self.seconds else None,
            "mb_per_s": round(self.bytes / 1e6 / self.seconds, 2) if self.seconds else None,
            **self.extra,
        }

    def lines(self) -> list[str]:
        rate = (
            (
                f" in {self.seconds:.1f} s ({self.done / self.seconds:.0f} files/s, "
                f"{self.bytes / 1e6 / self.seconds:.1f} MB/s)"
            )
            if self.seconds and self.done
            else ""
        )
        out = [
            f"{self.verb} {self.done} file(s), {self.bytes / 1e6:.1f} MB{rate}",
            f"skipped {self.skipped} already up to date",
            f"failed {len(self.failed)}" + (":" if self.failed else ""),
        ]
        by_reason: dict[str, list[str]] = {}
        for name, why in sorted(self.failed.items()):
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
            out.append(f"  {why}: {shown}")
        return out


def transfer_all(
    items: Iterable[T],
    name: Callable[[T], str],
    fn: Callable[[T], int | None],
    summary: TransferSummary,
    workers: int,
    description: str,
) -> TransferSummary:
    """Run ``fn`` on every item in a thread pool with a progress bar. ``fn`` returns the bytes it
    sent, or None when the item was already up to date; a TransferError or S3 error marks it failed."""
    items = list(items)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for fut in progress(as_completed(futures), total=len(futures), description=description):
            try:
                sent = fut.result()
            except TRANSFER_ERRORS as e:
                summary.failed[name(futures[fut])] = reason(e)
                continue
            if sent is None:
                summary.skipped += 1
            else:
                summary.done += 1
                summary.bytes += sent
    summary.seconds += time.perf_counter() - started
    return summary
