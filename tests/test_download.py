"""`bincount download` against a real S3 API server (moto) on 127.0.0.1, seeded with real ABID files."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from bincount.cli import main
from bincount.data.download import REPORT_NAME, download, draw_stratified, ensure_dataset, subset_ids
from bincount.data.records import read_abid
from bincount.data.s3 import s3_client
from bincount.errors import BincountError
from bincount.paths import PROJECT_ROOT
from bincount.training import train
from conftest import TINY, compose_cfg, seed_public_bucket

BUCKET = "aft-vbi-pds"


def counts_of(raw: Path, ids) -> dict[str, int]:
    return {i: json.loads((raw / "metadata" / f"{i}.json").read_text())["EXPECTED_QUANTITY"] for i in ids}


def write_file_list(path: Path, labels: dict[str, int]) -> Path:
    """A Udacity-format file_list.json of these ids."""
    doc: dict[str, list[str]] = {}
    for i, c in sorted(labels.items()):
        doc.setdefault(str(c), []).append(f"data/metadata/{i}.json")
    path.write_text(json.dumps(doc))
    return path


def raw_ids(abid: Path, n: int, start: int = 1) -> list[str]:
    return [f"{i:05d}" for i in range(start, start + n)]


def assert_same_files(dest: Path, src: Path, ids) -> None:
    for i in ids:
        for key in (f"bin-images/{i}.jpg", f"metadata/{i}.json"):
            assert (dest / key).read_bytes() == (src / key).read_bytes(), key


def temp_files(dest: Path) -> list[Path]:
    return [p for sub in ("bin-images", "metadata") for p in (dest / sub).glob(".*")]


def bincount(*args: str) -> subprocess.Popen:
    """The `bincount` command in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "bincount.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "BINCOUNT_NO_PROGRESS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_download_fetches_exact_files_and_a_rerun_fetches_only_what_differs(aws, abid, tmp_path):
    raw, ids = abid / "raw", raw_ids(abid, 12)
    seed_public_bucket(aws, raw, ids)
    labels = counts_of(raw, ids)
    file_list = write_file_list(tmp_path / "list.json", labels)
    dest = tmp_path / "abid"
    client = s3_client(aws, unsigned=True)  # anonymous, as against the public bucket

    first = download(dest, subset_ids(file_list), client=client, workers=4)
    assert (first.done, first.skipped, first.failed) == (24, 0, {})
    assert first.bytes == sum(
        (raw / k).stat().st_size for i in ids for k in (f"bin-images/{i}.jpg", f"metadata/{i}.json")
    )
    assert_same_files(dest, raw, ids)
    records, report = read_abid(dest)
    assert {r.id: r.count for r in records} == labels and report.total == 0
    assert json.loads((dest / REPORT_NAME).read_text())["complete"] is True

    (dest / "bin-images" / f"{ids[0]}.jpg").write_bytes(b"partial")  # a local file whose size differs
    again = download(dest, subset_ids(file_list), client=client, workers=4)
    assert (again.done, again.skipped, again.failed) == (1, 23, {})
    assert_same_files(dest, raw, ids)

    classes = sorted(set(labels.values()))[:2]
    assert set(subset_ids(file_list, classes).values()) == set(classes)


def test_default_subset_ships_with_the_package(abid):
    shipped = subset_ids()
    assert len(shipped) == 10441 and set(shipped.values()) == {1, 2, 3, 4, 5}
    udacity = json.loads((abid / "file_list.json").read_text())
    assert shipped == {Path(p).stem: int(c) for c, paths in udacity.items() for p in paths}


def test_killed_download_leaves_no_partial_file_and_a_rerun_completes(aws, abid, tmp_path):
    raw, ids = abid / "raw", raw_ids(abid, 150)
    seed_public_bucket(aws, raw, ids)
    file_list = write_file_list(tmp_path / "list.json", counts_of(raw, ids))
    dest = tmp_path / "abid"
    proc = bincount("download", str(dest), "--file-list", str(file_list), "--endpoint-url", aws, "--workers", "2")
    sizes = {i: (raw / "bin-images" / f"{i}.jpg").stat().st_size for i in ids}
    partial_seen, landed = [], []
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        landed = list((dest / "bin-images").glob("*.jpg")) if (dest / "bin-images").is_dir() else []
        for p in landed:  # every visible image must be whole at every moment
            try:
                if p.stat().st_size != sizes[p.stem]:
                    partial_seen.append(p.name)
            except FileNotFoundError:
                pass
        if len(landed) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=30) == -signal.SIGKILL, proc.stderr.read()
    present = [p.relative_to(dest) for sub in ("bin-images", "metadata") for p in (dest / sub).glob("[!.]*")]
    assert 20 <= len(present) < 2 * len(ids), "the download was not interrupted midway"
    assert partial_seen == []
    assert all((dest / k).read_bytes() == (raw / k).read_bytes() for k in present)  # what it left is whole

    summary = download(dest, ids, client=s3_client(aws, unsigned=True), workers=4)
    assert summary.ok and summary.skipped >= len(present) and summary.done + summary.skipped == 2 * len(ids)
    assert_same_files(dest, raw, ids)
    assert temp_files(dest) == []  # the killed run's temporary files are gone


def test_missing_and_corrupt_keys_are_reported_and_the_rest_is_complete(aws, abid, tmp_path, monkeypatch, capsys):
    raw, ids = abid / "raw", raw_ids(abid, 10)
    seed_public_bucket(aws, raw, ids)
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    s3.delete_object(Bucket=BUCKET, Key=f"bin-images/{ids[0]}.jpg")
    s3.delete_object(Bucket=BUCKET, Key=f"metadata/{ids[1]}.json")
    truncated = (raw / "bin-images" / f"{ids[2]}.jpg").read_bytes()[:3000]
    s3.put_object(Bucket=BUCKET, Key=f"bin-images/{ids[2]}.jpg", Body=truncated)
    s3.put_object(Bucket=BUCKET, Key=f"metadata/{ids[3]}.json", Body=b'{"EXPECTED_QUANTITY": ')
    file_list = write_file_list(tmp_path / "list.json", counts_of(raw, ids))
    dest = tmp_path / "abid"

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws)  # boto3's own variable names the endpoint here
    assert main(["download", str(dest), "--file-list", str(file_list), "--workers", "4"]) == 1
    out = capsys.readouterr().out
    assert "fetched 16 file(s)" in out and "failed 4:" in out
    report = json.loads((dest / REPORT_NAME).read_text())
    assert report["complete"] is False
    missing = {f"bin-images/{ids[0]}.jpg", f"metadata/{ids[1]}.json"}
    bad = missing | {f"bin-images/{ids[2]}.jpg", f"metadata/{ids[3]}.json"}
    assert set(report["failed"]) == bad
    assert all(report["failed"][k].startswith("missing on the server") for k in missing)
    assert report["failed"][f"bin-images/{ids[2]}.jpg"].startswith("corrupt on the server (unreadable image")
    assert report["failed"][f"metadata/{ids[3]}.json"] == "corrupt on the server (metadata is not valid JSON)"
    for i in ids:
        for key in (f"bin-images/{i}.jpg", f"metadata/{i}.json"):
            if key in bad:
                assert not (dest / key).exists(), key  # nothing corrupt is installed
            else:
                assert (dest / key).read_bytes() == (raw / key).read_bytes(), key
    assert temp_files(dest) == []


class FlakyS3Proxy:
    """A loopback HTTP proxy in front of the S3 server that fails the first GET of every image: a 503
    SlowDown for half of them, a connection dropped halfway through the body for the others."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self.gets: dict[str, int] = {}
        self.heads: dict[str, int] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                return conn.getresponse()

            def do_HEAD(self):
                key = self.path.split("?")[0]
                proxy.heads[key] = proxy.heads.get(key, 0) + 1
                self._relay(self._forward(), head=True)

            def do_GET(self):
                if "Range" in self.headers:  # the reachability check: passed through, not counted
                    return self._relay(self._forward())
                key = self.path.split("?")[0]
                proxy.gets[key] = n = proxy.gets.get(key, 0) + 1
                resp = self._forward()
                if n > 1 or "/bin-images/" not in key or resp.status != 200:
                    return self._relay(resp)
                data = resp.read()
                if int(key[-9:-4]) % 2:  # a 503 SlowDown
                    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(body)))
                else:  # the whole length announced, half the body sent, then a hang-up
                    body = data[: len(data) // 2]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def _relay(self, resp, head=False):
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_transient_failures_are_retried_with_backoff_and_missing_keys_are_not(aws, abid, tmp_path):
    """botocore's standard retry mode retries the 503s; s3transfer restarts the downloads cut off halfway."""
    raw, ids = abid / "raw", raw_ids(abid, 8)
    seed_public_bucket(aws, raw, ids)
    proxy = FlakyS3Proxy(aws)
    try:
        summary = download(tmp_path / "abid", ids + ["99999"], client=s3_client(proxy.url, unsigned=True), workers=4)
    finally:
        proxy.close()
    assert summary.done == 16 and set(summary.failed) == {"bin-images/99999.jpg", "metadata/99999.json"}
    assert_same_files(tmp_path / "abid", raw, ids)
    images = {k: n for k, n in proxy.gets.items() if "/bin-images/" in k and "99999" not in k}
    assert images == {f"/{BUCKET}/bin-images/{i}.jpg": 2 for i in ids}  # each failed once, then came whole
    # a missing key is final: asked once (s3transfer's HeadObject before its GetObject), never retried
    assert proxy.heads[f"/{BUCKET}/bin-images/99999.jpg"] == 1 and f"/{BUCKET}/bin-images/99999.jpg" not in proxy.gets


def test_count_per_class_draws_a_seeded_stratified_subset_from_the_bucket(aws, abid, tmp_path):
    raw = abid / "raw"
    labels = counts_of(raw, [p.stem for p in sorted((raw / "metadata").glob("*.json"))])
    ids = [i for c in range(6) for i in [j for j, n in sorted(labels.items()) if n == c][:4]]
    ids += [i for i, n in sorted(labels.items()) if n == 9][:4]  # counts outside the classes too
    seed_public_bucket(aws, raw, ids)
    client = s3_client(aws, unsigned=True)

    chosen = draw_stratified(tmp_path / "a", list(range(6)), 3, client=client, seed=7, workers=4)
    assert Counter(chosen.values()) == {c: 3 for c in range(6)}
    assert all(labels[i] == c for i, c in chosen.items())
    summary = download(tmp_path / "a", chosen, client=client, workers=4)
    records, _ = read_abid(tmp_path / "a", file_list=tmp_path / "a" / "file_list.json")
    assert summary.ok and {r.id: r.count for r in records} == chosen
    assert draw_stratified(tmp_path / "b", list(range(6)), 3, client=client, seed=7, workers=4) == chosen
    assert draw_stratified(tmp_path / "b", list(range(6)), 3, client=client, seed=8, workers=4) != chosen


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_one_clear_error(tmp_path):
    client = s3_client(f"http://127.0.0.1:{_closed_port()}", unsigned=True)
    with pytest.raises(BincountError, match="cannot reach the S3 endpoint"):
        download(tmp_path / "abid", ["00001"], client=client)


def test_first_run_downloads_into_the_default_folder_then_trains(aws, abid, tmp_path, monkeypatch):
    raw = abid / "raw"
    labels = counts_of(raw, raw_ids(abid, 120))
    ids = [i for c in (1, 2, 3, 4, 5) for i in [j for j, n in sorted(labels.items()) if n == c][:6]]
    seed_public_bucket(aws, raw, ids)
    file_list = write_file_list(tmp_path / "list.json", {i: labels[i] for i in ids})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws)
    data = tmp_path / "data" / "abid"  # stands in for the default data folder, empty on a fresh machine
    cfg = compose_cfg(
        "train",
        TINY
        + [
            f"data.root={data}",
            f"data.download_to={data}",
            f"data.file_list={file_list}",
            "trainer.max_epochs=1",
            "logger=csv",
        ],
        tmp_path / "run",
    )
    train(cfg)
    assert sorted(p.stem for p in (data / "bin-images").glob("*.jpg")) == sorted(ids)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert sum(metrics["data"]["images"].values()) == len(ids)


def test_first_run_without_network_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(
        BincountError, match=r"cannot be downloaded \(cannot reach the S3 endpoint .*\); point data.root"
    ):
        ensure_dataset(tmp_path / "abid")
