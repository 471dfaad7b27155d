"""bincount: data, serving and reports for counting items in warehouse bin photos.

Each subcommand lives beside the code it drives, in a module with a ``register(subparsers)``
function, listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from bincount.errors import explain

# Each subcommand and the module whose register(subparsers) defines it. Only the module of the
# command being run is imported: most pull in torch and Lightning, which take seconds to load.
COMMANDS = {
    "scan": ("bincount.cli", "read an ABID-layout folder: usable images per count and what is skipped"),
    "download": ("bincount.data.download", "fetch ABID images and metadata from S3 into an ABID-layout folder"),
    "eda": ("bincount.data.eda", "report on a dataset folder: counts, image sizes, SKUs, weights, dimensions"),
    "prepare": ("bincount.data.prepare", "resize an ABID folder once and write the train/valid/test split folders"),
    "upload": ("bincount.data.upload", "sync a prepared dataset folder to s3://bucket/prefix (SageMaker channels)"),
    "predict": ("bincount.predict", "count the items in images, folders or s3:// URIs; write CSV or JSON"),
    "reconcile": ("bincount.inventory", "compare predicted counts with expected quantities: match, mismatch or needs-audit"),
    "serve": ("bincount.serve.server", "serve a model over HTTP as a SageMaker container does (/ping, /invocations)"),
    "loadtest": ("bincount.serve.loadtest", "a bounded load test of a local inference server: latency and throughput"),
    "export": ("bincount.serve.export", "export a checkpoint for serving: safetensors + JSON, ONNX, SageMaker tarball"),
    "deploy": ("bincount.serve.deploy", "create a SageMaker endpoint (real-time or serverless) for a model"),
    "delete-endpoint": ("bincount.serve.deploy", "delete a SageMaker endpoint, its endpoint config and its models"),
    "debug-report": ("bincount.reports.debug_report", "plot losses and per-layer weight/gradient statistics of a run or smdebug trial"),
    "cost-report": ("bincount.reports.cost_report", "utilization, time per epoch and the cheapest fitting SageMaker instance of a run"),
    "sweep-summary": ("bincount.sweeps", "(re)write the trial table and best overrides of a multirun folder"),
}


def counts(text: str) -> list[int]:
    """A list of counts on the command line: ``0..5`` (a range, both ends included) or ``1,2,3``."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            return list(range(lo, hi + 1))
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts; write e.g. 0..5 or 1,2,3") from None


def _scan(args: argparse.Namespace) -> int:
    from bincount.data.records import class_counts, read_abid

    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    records, report = read_abid(args.root, classes, args.file_list, check_images=not args.no_check)
    print(json.dumps({"images": len(records), "per_count": class_counts(records), "skipped": report.summary()},
                     indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="read an ABID-layout folder: usable images per count and what is skipped")
    p.add_argument("root")
    p.add_argument("--classes", help="comma-separated counts to keep (default: all)")
    p.add_argument("--file-list", help="Udacity-format file_list.json restricting the ids")
    p.add_argument("--no-check", action="store_true", help="skip the full decode of every image")
    p.set_defaults(func=_scan)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command``'s module, or (no or unknown command) a list of every command."""
    parser = argparse.ArgumentParser(prog="bincount", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(sub)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        message = explain(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
