"""`bincount upload` against a real S3 API server (moto) on 127.0.0.1, and the whole data flow end to end:
download from a public bucket, prepare, upload to your bucket, train on what a SageMaker channel receives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from bincount.cli import main
from bincount.data.prepare import prepare
from bincount.data.upload import local_files, upload
from bincount.errors import BincountError
from bincount.layout import MANIFEST as MANIFEST_NAME
from bincount.training import train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice, seed_public_bucket

BUCKET = "my-bucket"


def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def remote_tree(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under a prefix, by name below it: what a SageMaker channel of that prefix receives."""
    client, out = s3(endpoint), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def local_tree(root: Path) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in local_files(root).items()}


@pytest.fixture
def prepared(abid, tmp_path) -> Path:
    raw = abid / "raw"
    src = make_abid_slice(raw, tmp_path / "raw", ids_by_count(raw, 10))
    out = tmp_path / "prepared"
    prepare(src, out, size=32, workers=2)
    return out


def test_upload_mirrors_the_folder_and_a_rerun_sends_only_changes(aws, prepared, abid):
    s3(aws).create_bucket(Bucket=BUCKET)
    uri = f"s3://{BUCKET}/abid/prepared"
    first = upload(prepared, uri, aws, workers=4)
    assert first.ok and first.done == len(local_tree(prepared)) == 50 + 50 + 2  # images, metadata, manifest+report
    assert remote_tree(aws, BUCKET, "abid/prepared") == local_tree(prepared)
    assert not any(name.startswith(".") for name in remote_tree(aws, BUCKET, "abid/prepared"))  # no state files

    again = upload(prepared, uri, aws, workers=4)
    assert (again.done, again.skipped, again.failed) == (0, first.done, {})

    prepare(prepared.parent / "raw", prepared, size=32, seed=3, workers=2)  # images move to other splits
    moved = upload(prepared, uri, aws, workers=4)
    assert 0 < moved.done < first.done and moved.extra["remote_only"] > 0
    cleaned = upload(prepared, uri, aws, workers=4, delete=True)
    assert cleaned.done == 0 and cleaned.extra["deleted"] == moved.extra["remote_only"]
    assert remote_tree(aws, BUCKET, "abid/prepared") == local_tree(prepared)


def test_large_files_go_in_parts_and_are_still_recognised_as_unchanged(aws, tmp_path):
    s3(aws).create_bucket(Bucket=BUCKET)
    folder = tmp_path / "packed"
    folder.mkdir()
    (folder / "images.npy").write_bytes(os.urandom(11 * 1024 * 1024))  # 3 parts of 5 MiB (S3's smallest)
    first = upload(folder, f"s3://{BUCKET}/p", aws, part_size=5 * 1024 * 1024)
    etag = s3(aws).head_object(Bucket=BUCKET, Key="p/images.npy")["ETag"]
    assert first.done == 1 and etag.strip('"').endswith("-3")
    assert upload(folder, f"s3://{BUCKET}/p", aws, part_size=5 * 1024 * 1024).skipped == 1
    assert remote_tree(aws, BUCKET, "p") == local_tree(folder)


def test_a_missing_bucket_or_missing_credentials_is_one_clear_error(aws, prepared, monkeypatch):
    with pytest.raises(BincountError, match="bucket nope does not exist"):
        upload(prepared, "s3://nope/x", aws)
    with pytest.raises(BincountError, match="is not an S3 URI"):
        upload(prepared, "nope/x", aws)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(prepared / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(prepared / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BincountError, match="no AWS credentials found"):
        upload(prepared, f"s3://{BUCKET}/x", aws)


def _end_to_end(aws, abid, tmp_path, ids: list[str], capsys) -> None:
    raw = abid / "raw"
    seed_public_bucket(aws, raw, ids)
    labels = {i: json.loads((raw / "metadata" / f"{i}.json").read_text())["EXPECTED_QUANTITY"] for i in ids}
    file_list = tmp_path / "list.json"
    file_list.write_text(
        json.dumps(
            {str(c): [f"metadata/{i}.json" for i in ids if labels[i] == c] for c in sorted(set(labels.values()))}
        )
    )
    data, prepared = tmp_path / "abid", tmp_path / "prepared"
    s3(aws).create_bucket(Bucket=BUCKET)

    assert main(["download", str(data), "--file-list", str(file_list), "--endpoint-url", aws]) == 0
    assert main(["prepare", str(data), str(prepared), "--size", "32", "--classes", "1..5"]) == 0
    assert main(["upload", str(prepared), f"s3://{BUCKET}/abid", "--endpoint-url", aws]) == 0
    print(capsys.readouterr().out)

    channel = tmp_path / "channel"  # what a SageMaker training channel of s3://my-bucket/abid receives
    for name, body in remote_tree(aws, BUCKET, "abid").items():
        (channel / name).parent.mkdir(parents=True, exist_ok=True)
        (channel / name).write_bytes(body)
    run = tmp_path / "run"
    cfg = compose_cfg(
        "train",
        TINY
        + [f"data.root={channel}", f"data.manifest={channel / MANIFEST_NAME}", "trainer.max_epochs=1", "logger=csv"],
        run,
    )
    train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert sum(metrics["data"]["images"].values()) == sum(1 for c in labels.values() if 1 <= c <= 5)
    assert metrics["data"]["skipped"]["total"] == 0


def test_download_prepare_upload_then_train_on_the_channel(aws, abid, tmp_path, capsys):
    _end_to_end(aws, abid, tmp_path, ids_by_count(abid / "raw", 6), capsys)


@pytest.mark.slow
def test_all_999_raw_images_download_prepare_upload_then_train(aws, abid, tmp_path, capsys):
    _end_to_end(aws, abid, tmp_path, sorted(p.stem for p in (abid / "raw" / "metadata").glob("*.json")), capsys)
