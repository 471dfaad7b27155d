"""The `bincount` command. Each subcommand lives beside the code it drives and registers itself
through a ``register(subparsers)`` function in one of the modules listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from bincount.errors import explain

# Modules that contribute subcommands (each defines register(subparsers)).
COMMANDS = [
    "bincount.cli",
    "bincount.reports.cost_report",
    "bincount.sweeps",
    "bincount.data.download",
    "bincount.data.eda",
    "bincount.data.prepare",
    "bincount.data.upload",
    "bincount.predict",
    "bincount.inventory",
    "bincount.serve.server",
    "bincount.serve.export",
    "bincount.serve.deploy",
    "bincount.serve.loadtest",
    "bincount.reports.debug_report",
]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bincount", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
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
