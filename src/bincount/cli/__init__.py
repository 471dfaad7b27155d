"""bincount: count items in warehouse bin photos.

The `bincount` command: every subcommand's arguments are parsed here, in this package, and handed to
library functions as plain values. `bincount train` and `bincount eval` are the Hydra apps of train.py
and eval.py (KEY=VALUE overrides of the configs), as is `bincount deploy`'s config; the other commands
take --flags."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bincount.errors import explain

# Each subcommand, the module of this package that defines it, and what it does. Only the module of the
# command being run is imported: most pull in torch and Lightning, which take seconds to load.
COMMANDS = {
    "train": ("bincount.cli.train", "train a counter (Hydra app: KEY=VALUE overrides, as python train.py)"),
    "eval": ("bincount.cli.eval", "evaluate a checkpoint (Hydra app: ckpt_path=CKPT data.root=DIR, as python eval.py)"),
    "scan": ("bincount.cli.data_commands", "read an ABID-layout folder: usable images per count and what is skipped"),
    "download": ("bincount.cli.data_commands", "fetch ABID images and metadata from S3 into an ABID-layout folder"),
    "eda": ("bincount.cli.data_commands", "report on a dataset folder: counts, image sizes, SKUs, weights, dimensions"),
    "prepare": (
        "bincount.cli.data_commands",
        "resize an ABID folder once and write the train/valid/test split folders",
    ),
    "upload": (
        "bincount.cli.data_commands",
        "sync a prepared dataset folder to s3://bucket/prefix (SageMaker channels)",
    ),
    "predict": ("bincount.cli.model_commands", "count the items in images, folders or s3:// URIs; write CSV or JSON"),
    "reconcile": (
        "bincount.cli.model_commands",
        "compare predicted counts with expected quantities: match, mismatch or needs-audit",
    ),
    "serve": (
        "bincount.cli.model_commands",
        "serve a model over HTTP as a SageMaker container does (/ping, /invocations)",
    ),
    "loadtest": (
        "bincount.cli.model_commands",
        "a bounded load test of a local inference server: latency and throughput",
    ),
    "export": (
        "bincount.cli.model_commands",
        "export a checkpoint for serving: safetensors + JSON, ONNX, SageMaker tarball",
    ),
    "deploy": (
        "bincount.cli.model_commands",
        "create a SageMaker endpoint (real-time or serverless): KEY=VALUE overrides of conf/deploy.yaml",
    ),
    "delete-endpoint": (
        "bincount.cli.model_commands",
        "delete a SageMaker endpoint, its endpoint config and its models",
    ),
    "debug-report": (
        "bincount.cli.report_commands",
        "plot losses and per-layer weight/gradient statistics of a run or smdebug trial",
    ),
    "cost-report": (
        "bincount.cli.report_commands",
        "utilization, time per epoch and the cheapest fitting SageMaker instance of a run",
    ),
    "sweep-summary": (
        "bincount.cli.report_commands",
        "(re)write the trial table and best overrides of a multirun folder",
    ),
}
HYDRA_APPS = ("train", "eval")  # modules with a Hydra main(): they parse their own command line


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command``'s module, or (no or unknown command) a list of every command."""
    parser = argparse.ArgumentParser(prog="bincount", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS and command not in HYDRA_APPS:
        importlib.import_module(COMMANDS[command][0]).register(sub)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def run_hydra_app(command: str, arguments: list[str]) -> int:
    """Run the Hydra app of ``command`` with ``arguments`` as its command line. sys.argv[0] becomes the
    app's own file, which Lightning runs again to start the other processes of a multi-GPU run."""
    app = importlib.import_module(COMMANDS[command][0])
    sys.argv = [app.__file__, *arguments]
    app.main()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in HYDRA_APPS and argv[0] == command:
        return run_hydra_app(command, argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
