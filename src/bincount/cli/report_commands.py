"""Report commands: debug-report, cost-report, sweep-summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _debug_report(args: argparse.Namespace) -> int:
    from bincount.reports.debug_report import load, plot_debug

    data, out = load(args.path)
    out = plot_debug(data, args.out or out)
    print(json.dumps({**data.summary(), "steps": len(data.summary()["steps"]), "plot": str(out)}, indent=2))
    return 0


def _cost_report(args: argparse.Namespace) -> int:
    from bincount.layout import COST_REPORT
    from bincount.reports.cost_report import render_markdown, write_report

    if args.sagemaker_job:
        import boto3

        from bincount.aws.cloudwatch import fetch_training_utilization

        fetch_training_utilization(args.sagemaker_job, args.run, boto3.Session(region_name=args.region), args.prices)
    report = write_report(args.run, args.prices, args.instance_type)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_markdown(report))
        print(f"written: {Path(args.run) / (COST_REPORT + '.md')}, " + ", ".join(report["plots"]))
    return 0


def _sweep_summary(args: argparse.Namespace) -> int:
    from bincount.sweeps import render_markdown, summarize_sweep

    print(render_markdown(summarize_sweep(args.sweep_dir, args.metric, args.mode)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from bincount.objective import MODES

    p = sub.add_parser(
        "debug-report",
        help="plot losses and per-layer weight/gradient statistics of a run "
        "(debugger records) or of a SageMaker Debugger trial (local or s3://)",
    )
    p.add_argument("path", help="a run directory, its debugger/ folder, an smdebug trial folder or s3:// URI")
    p.add_argument("--out", help="PNG to write (default: beside the records; ./debug_report.png for S3)")
    p.set_defaults(func=_debug_report)

    p = sub.add_parser(
        "cost-report",
        help="utilization, time per epoch and the cheapest fitting SageMaker instance for a run directory",
    )
    p.add_argument(
        "run",
        help="a run directory (outputs/train/runs/<time>/) or, with --sagemaker-job, where to write the job's report",
    )
    p.add_argument("--prices", help="price table (default: the one shipped with bincount, conf/cost/prices.yaml)")
    p.add_argument(
        "--instance-type", help="the instance the run used, to compare against (found by itself in a SageMaker job)"
    )
    p.add_argument("--sagemaker-job", help="read this SageMaker training job's instance metrics from CloudWatch first")
    p.add_argument("--region", help="AWS region of the job (default: the AWS configuration's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cost_report)

    p = sub.add_parser("sweep-summary", help="(re)write the trial table and best overrides of a multirun folder")
    p.add_argument("sweep_dir", help="outputs/train/multiruns/<time>/")
    p.add_argument(
        "--metric", help="metric in each trial's metrics.json best_val (default: the sweep's optimized_metric)"
    )
    p.add_argument("--mode", choices=MODES, help="max or min is best (default: the sweep's optimized_mode)")
    p.set_defaults(func=_sweep_summary)
