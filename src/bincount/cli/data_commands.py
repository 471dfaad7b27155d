"""Data commands: scan, download, eda, prepare, upload."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bincount.cli.common import counts, default
from bincount.errors import BincountError


def _scan(args: argparse.Namespace) -> int:
    from bincount.counts import CountClasses
    from bincount.data.records import class_counts, counts_per_class, read_abid_folders

    if args.overflow and not args.classes:
        raise BincountError("scan: --overflow needs --classes (the exact counts, e.g. --classes 0..5 --overflow)")
    classes = CountClasses(args.classes, args.overflow) if args.classes else None
    records, report = read_abid_folders(args.root, classes, args.file_list, check_images=not args.no_check)
    summary = {"images": len(records), "per_count": class_counts(records)}
    if classes is not None:
        summary["per_class"] = counts_per_class(records, classes)
    print(json.dumps({**summary, "skipped": report.summary()}, indent=2))
    return 0


def _download(args: argparse.Namespace) -> int:
    from bincount.data.download import download, draw_stratified, subset_ids
    from bincount.data.s3 import s3_client

    client = s3_client(args.endpoint_url, unsigned=not args.signed, workers=args.workers, attempts=args.attempts)
    if args.count_per_class:
        from bincount.config import training_defaults

        classes = args.classes or list(training_defaults().classes)
        ids = draw_stratified(args.dest, classes, args.count_per_class, args.bucket, client, args.seed, args.workers)
    else:
        ids = subset_ids(args.file_list, args.classes)
    summary = download(args.dest, ids, args.bucket, client, args.workers)
    print("\n".join(summary.lines()))
    return 0 if summary.ok else 1


def _eda(args: argparse.Namespace) -> int:
    from bincount.data.eda import eda

    out = args.out or Path("outputs") / "eda" / Path(args.root).resolve().name
    summary = eda(args.root, out, args.file_list)
    print(f"{summary['bins']} bins, images per count {summary['images_per_count']}; report: {Path(out) / 'eda.md'}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from bincount.data.prepare import prepare
    from bincount.layout import MANIFEST

    r = prepare(
        args.src,
        args.out,
        args.size,
        args.format,
        args.classes,
        args.file_list,
        args.split,
        args.ratios,
        args.seed,
        args.quality,
        args.workers,
    )
    done = f"{r['resized']} resized, {r['unchanged']} unchanged"
    rate = f" ({r['images_per_s']} images/s on {r['workers']} workers)" if r["images_per_s"] else ""
    print(f"prepared {sum(r['images'].values())} images in {args.out}: {done} in {r['seconds']} s{rate}")
    print(f"split {r['images']}; skipped {r['skipped']['by_reason'] or 0}")
    print(f"train with: bincount train data.root={args.out} data.manifest={Path(args.out) / MANIFEST}")
    return 0


def _upload(args: argparse.Namespace) -> int:
    from bincount.data.s3 import s3_client
    from bincount.data.upload import upload

    client = s3_client(args.endpoint_url, workers=args.workers, attempts=args.attempts)
    summary = upload(args.local, args.uri, workers=args.workers, delete=args.delete, client=client)
    lines = summary.lines()
    if summary.extra.get("remote_only"):
        lines.append(
            f"{summary.extra['remote_only']} object(s) under {args.uri} have no local file (--delete removes them)"
        )
    elif summary.extra.get("deleted"):
        lines.append(f"deleted {summary.extra['deleted']} object(s) that have no local file")
    print("\n".join(lines))
    return 0 if summary.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    from bincount.config import training_defaults
    from bincount.data import download, prepare, s3, split, upload

    train = training_defaults()  # a training run's folder, seed, size and split: one source for both
    list_help = "e.g. 1..5, 1,2,3 or [1,2,3]"

    p = sub.add_parser("scan", help="read ABID-layout folders: usable images per count and what is skipped")
    p.add_argument("root", nargs="+", help="one or more folders, read as one dataset (an id in two is an error)")
    p.add_argument("--classes", type=counts, help=f"counts to keep, {list_help} (default: all)")
    p.add_argument(
        "--overflow",
        action="store_true",
        help="keep bins above the largest of --classes too, as one class (data.overflow=true); prints per_class",
    )
    p.add_argument("--file-list", help="Udacity-format file_list.json restricting the ids")
    p.add_argument("--no-check", action="store_true", help="skip the full decode of every image")
    p.set_defaults(func=_scan)

    p = sub.add_parser("download", help="fetch ABID images and metadata from S3 into an ABID-layout folder")
    p.add_argument(
        "dest",
        nargs="?",
        default=train.data_dir,
        help=f"destination folder (default: the one training reads, {train.data_dir})",
    )
    subset = p.add_mutually_exclusive_group()
    subset.add_argument(
        "--file-list",
        help="Udacity-format file_list.json of the ids to fetch "
        "(default: the 10,441-image subset shipped with bincount)",
    )
    subset.add_argument(
        "--count-per-class",
        type=int,
        metavar="N",
        help="instead of a list, draw N bins of each count at random from the bucket's metadata",
    )
    p.add_argument(
        "--classes",
        type=counts,
        help=f"counts to fetch, {list_help} (default: all listed; with "
        f"--count-per-class training's data.classes, {train.classes})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=train.seed,
        help=f"seed of the --count-per-class draw (default: training's, {train.seed})",
    )
    p.add_argument("--bucket", default=default(download.download, "bucket"))
    p.add_argument("--endpoint-url", help="an S3-compatible server (default: AWS_ENDPOINT_URL_S3, else AWS)")
    p.add_argument(
        "--signed",
        action="store_true",
        help="sign requests with your credentials (a private mirror); the public bucket needs none",
    )
    p.add_argument("--workers", type=int, default=default(download.download, "workers"), help="parallel transfers")
    p.add_argument(
        "--attempts",
        type=int,
        default=default(s3.s3_client, "attempts"),
        help="tries per request (botocore's standard retry mode: backoff, throttling)",
    )
    p.set_defaults(func=_download)

    p = sub.add_parser("eda", help="report on a dataset folder: counts, image sizes, SKUs, weights, dimensions")
    p.add_argument("root", help="an ABID-layout folder (or one `bincount prepare` wrote)")
    p.add_argument("--out", help="folder for eda.md, eda.json and the PNG plots (default: outputs/eda/<name>)")
    p.add_argument("--file-list", help="Udacity-format file_list.json restricting the ids")
    p.set_defaults(func=_eda)

    p = sub.add_parser("prepare", help="resize an ABID folder once and write the train/valid/test split folders")
    p.add_argument("src", help="an ABID-layout folder (e.g. the originals `bincount download` fetched)")
    p.add_argument("out", help="output folder (a data.root for training, or a folder to upload)")
    p.add_argument(
        "--size",
        type=int,
        default=train.image_size,
        help=f"storage size in pixels, square (default: training's data.image_size, {train.image_size})",
    )
    p.add_argument(
        "--format",
        choices=prepare.FORMATS,
        default=default(prepare.prepare, "fmt"),
        help="jpeg: split/count folders of JPEGs; packed: one memory-mapped uint8 array",
    )
    p.add_argument("--classes", type=counts, help=f"counts to keep, {list_help} (default: all)")
    p.add_argument("--file-list", help="Udacity-format file_list.json restricting the ids")
    p.add_argument(
        "--split", choices=split.STRATEGIES, default=train.split, help=f"default: training's data.split, {train.split}"
    )
    p.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=list(train.ratios),
        metavar=("TRAIN", "VALID", "TEST"),
        help=f"default: training's data.ratios, {' '.join(map(str, train.ratios))}",
    )
    p.add_argument("--seed", type=int, default=train.seed, help=f"default: training's, {train.seed}")
    p.add_argument(
        "--quality", type=int, default=default(prepare.prepare, "quality"), help="JPEG quality of the stored images"
    )
    p.add_argument("--workers", type=int, help="processes (default: every core)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("upload", help="sync a prepared dataset folder to s3://bucket/prefix (SageMaker channels)")
    p.add_argument("local", help="the folder to send, e.g. what `bincount prepare` wrote")
    p.add_argument("uri", help="s3://bucket/prefix")
    p.add_argument("--endpoint-url", help="an S3-compatible server (default: AWS_ENDPOINT_URL_S3, else AWS)")
    p.add_argument("--delete", action="store_true", help="also delete objects under the prefix with no local file")
    p.add_argument("--workers", type=int, default=default(upload.upload, "workers"), help="parallel transfers")
    p.add_argument(
        "--attempts",
        type=int,
        default=default(s3.s3_client, "attempts"),
        help="tries per request (botocore's standard retry mode: backoff, throttling)",
    )
    p.set_defaults(func=_upload)
