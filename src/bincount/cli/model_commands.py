"""Commands on a trained model: predict, reconcile, export, serve, loadtest, deploy, delete-endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bincount.cli.common import default


def _predict(args: argparse.Namespace) -> int:
    from bincount.data.images import IMAGE_SUFFIXES
    from bincount.predict import predict

    predictions, summary = predict(
        args.model, args.images, args.out, args.backend, args.split, args.manifest, args.batch_size, args.workers
    )
    if not args.quiet:
        for p in predictions:
            print(f"{p.id}\t{p.name}\t{p.confidence:.3f}")  # "6+": more than 5
    skipped, ignored = summary.pop("skipped_images"), summary.pop("ignored_files")
    for image, reason in skipped.items():
        print(f"skipped {image}: {reason}", file=sys.stderr)
    if ignored:
        print(
            f"ignored {len(ignored)} file(s) whose names are not images' (hidden, or not "
            f"{'/'.join(IMAGE_SUFFIXES)}): {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}",
            file=sys.stderr,
        )
    if summary["duplicate_ids"]:
        print(
            f"warning: {len(summary['duplicate_ids'])} id(s) predicted from more than one image (same file name): "
            f"{', '.join(summary['duplicate_ids'][:10])}; reconcile decides such a bin once",
            file=sys.stderr,
        )
    print(json.dumps(summary), file=sys.stderr)
    if not predictions:
        print(f"error: no image could be read, so {summary['out']} holds no predictions", file=sys.stderr)
    # Exit 1 when an input could not be used: the predictions of the rest are written, the gaps are listed.
    return 1 if skipped or not predictions else 0


def _reconcile(args: argparse.Namespace) -> int:
    from bincount.errors import BincountError
    from bincount.inventory import (
        CONFLICTING_PREDICTIONS,
        MATCH,
        NOT_DECIDED,
        RecordModel,
        Threshold,
        add_undecided,
        calibrate,
        choose_record_threshold,
        read_expected,
        reconcile,
        summarize,
        unique_predictions,
        write_decisions,
    )
    from bincount.predict import read_predictions

    predictions, problems = unique_predictions(read_predictions(args.predictions))
    expected, expected_problems = read_expected(args.expected)
    problems.merge(expected_problems)
    record_model = RecordModel(args.record_error_rate, args.record_error_spread) if args.record_error_rate else None
    if args.threshold is not None:
        threshold = Threshold(args.threshold, None, None, None)
    elif args.calibration:
        calibration, calibration_problems = unique_predictions(read_predictions(args.calibration))
        for (
            reason,
            ids,
        ) in calibration_problems.errors.items():  # left out of the calibration, not an error of today's bins
            problems.note(f"calibration: {reason} (left out)", ids)
        for reason, ids in calibration_problems.notes.items():
            problems.note(f"calibration: {reason}", ids)
        if record_model:
            threshold = choose_record_threshold(
                record_model, calibration, args.target_precision, args.z, args.accept_overflow
            )
        else:
            threshold = calibrate(calibration, args.target_precision, args.z)
    else:
        raise BincountError(
            "give --threshold T, or --calibration VAL_PREDICTIONS (with --target-precision) "
            "to choose one on validation data"
        )
    undecidable = problems.undecidable()
    decisions, unmatched = reconcile(
        [p for p in predictions if p.id not in undecidable],
        {i: e for i, e in expected.items() if i not in undecidable},
        threshold.threshold,
        record_model,
        args.accept_overflow,
    )
    photographed = {p.id for p in predictions} | set(problems.errors.get(CONFLICTING_PREDICTIONS, []))
    decisions = add_undecided(decisions, unmatched, problems, photographed, expected)
    out = write_decisions(decisions, Path(args.out))
    summary = summarize(decisions, threshold, unmatched, problems)
    summary["decisions"] = str(out)
    summary["accept_overflow"] = args.accept_overflow
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    to_check = [d for d in decisions if d.decision != MATCH]
    why = (
        f"threshold {threshold.threshold:.3f}"
        if threshold.threshold <= 1
        else "no confidence met the target precision on the calibration set, so every bin goes to a person"
    )
    print(f"{len(to_check)} of {len(decisions)} bins to check ({why}):")
    for d in to_check[: args.show]:
        if d.decision == NOT_DECIDED:
            print(f"  {d.bin_id}\t{d.decision}\t{d.problem}")
            continue
        print(
            f"  {d.bin_id}\t{d.decision}\texpected {d.expected_count}, predicted {d.predicted or '-'} "
            f"({d.confidence:.2f})\t{d.reason}\t{d.sku_names[:60]}"
        )
    if len(to_check) > args.show:
        print(f"  ... and {len(to_check) - args.show} more in {out}")
    print(json.dumps(summary, indent=2), file=sys.stderr)
    for line in problems.lines():
        print(line, file=sys.stderr)
    if problems.errors:  # the decisions of the other bins are written; these inputs must be fixed
        print(
            f"error: incomplete: {sum(map(len, problems.errors.values()))} input row(s) could not be used "
            f"(listed above and in the summary's input_problems)",
            file=sys.stderr,
        )
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from bincount.serve.export import export_model

    written = export_model(
        args.model, args.out, onnx=args.onnx, parity_images=args.parity_images, sagemaker=args.sagemaker
    )
    print(json.dumps(written, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os
    import signal

    from bincount.serve.batching import BatchingPredictor
    from bincount.serve.predictor import load_predictor
    from bincount.serve.server import InferenceServer

    os.environ["BINCOUNT_MAX_IMAGES"] = str(args.max_images)  # the handler's limit, as in a container
    model = load_predictor(args.model, args.backend)
    server = InferenceServer(
        (args.host, args.port),
        BatchingPredictor(model, args.max_batch, args.max_wait_ms),
        int(args.max_body_mb * 1024 * 1024),
    )
    # set before saying it serves: Ctrl-C (SIGINT) stops even where SIGINT was ignored at start (a script's `&`
    # job), where Python installs no KeyboardInterrupt handler and the server would not stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"serving {args.model} ({model.backend}, counts {model.counts}) on {server.url}: "
        "GET /ping, POST /invocations; Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.model.close()
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from bincount.data.sources import find_images
    from bincount.serve.loadtest import CONTENT_TYPES, load_test

    images = find_images(args.images).images[: args.distinct]
    bodies = [(p.read_bytes(), CONTENT_TYPES.get(p.suffix.lower(), "application/x-image")) for p in images]
    result = load_test(args.url, bodies, args.requests, args.concurrency)
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


def _deploy(args: argparse.Namespace) -> int:
    from bincount.serve.deploy import compose, deploy

    cfg = compose(args.overrides)
    plan = deploy(cfg)
    print(json.dumps(plan, indent=2, default=str), flush=True)
    if cfg.dry_run:
        print("dry run: nothing was uploaded or created", file=sys.stderr)
    else:
        print(
            f"endpoint {cfg.name}: {plan['EndpointStatus']}; invoke it with content type image/jpeg, "
            f"delete it with `bincount delete-endpoint {cfg.name}`",
            file=sys.stderr,
        )
    return 0


def _delete(args: argparse.Namespace) -> int:
    from bincount.serve.deploy import delete_endpoint

    gone = delete_endpoint(args.name, args.region, args.keep_model, args.dry_run)
    print(("would delete: " if args.dry_run else "deleted: ") + ", ".join(gone))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from bincount import predict
    from bincount.serve import handler, loadtest, server
    from bincount.serve.predictor import BACKENDS

    model_help = "RUN/checkpoints/best.ckpt, a `bincount export` folder, or model.onnx"

    p = sub.add_parser("predict", help="count the items in images, folders or s3:// URIs; write CSV or JSON")
    p.add_argument("model", help=model_help)
    p.add_argument("images", nargs="+", help="image files, folders (ABID folders add true counts), s3:// URIs")
    p.add_argument("--backend", choices=BACKENDS, default=default(predict.predict, "backend"))
    p.add_argument("--out", default="predictions.csv", help="CSV, or JSON when it ends in .json")
    p.add_argument("--batch-size", type=int, default=default(predict.predict, "batch_size"))
    p.add_argument("--workers", type=int, default=default(predict.predict, "workers"), help="threads decoding images")
    p.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="only the images of this split of the checkpoint's training run",
    )
    p.add_argument("--manifest", help="split_manifest.csv for --split (default: the one beside the checkpoint)")
    p.add_argument("--quiet", action="store_true", help="do not print one line per image")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "reconcile", help="compare predicted counts with expected quantities: match, mismatch or needs-audit per bin"
    )
    p.add_argument("predictions", help="predictions CSV/JSON written by `bincount predict`")
    p.add_argument(
        "--expected",
        nargs="+",
        required=True,
        help="CSV (bin_id,expected_count[,sku_names]), ABID metadata JSON files, or folders of them",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="confidence (or P(record right) with --record-error-rate) below which a bin goes to a person",
    )
    p.add_argument(
        "--record-error-rate",
        type=float,
        default=None,
        help="share of records that are wrong (from past audits): decide on P(record right | photo)",
    )
    p.add_argument(
        "--record-error-spread",
        type=int,
        default=2,
        help="a wrong record is off by 1 to this many items (with --record-error-rate)",
    )
    p.add_argument("--calibration", help="validation predictions (with true_count) to choose the threshold on")
    p.add_argument(
        "--target-precision",
        type=float,
        default=0.95,
        help="accuracy the auto-verified counts must reach on the calibration set",
    )
    p.add_argument(
        "--z",
        type=float,
        default=1.645,
        help="its Wilson lower bound at this z must reach the target (0: the plain proportion)",
    )
    p.add_argument(
        "--accept-overflow",
        action="store_true",
        help='auto-verify a bin whose photo says "more than K" (confidently) and whose record is above K; '
        'without it such a bin goes to a person ("too many to count")',
    )
    p.add_argument("--out", default="decisions.csv")
    p.add_argument("--summary", help="also write the summary JSON here")
    p.add_argument("--show", type=int, default=20, help="bins to list on screen")
    p.set_defaults(func=_reconcile)

    p = sub.add_parser("export", help="export a checkpoint for serving: safetensors + JSON, ONNX, SageMaker tarball")
    p.add_argument("model", help="RUN/checkpoints/best.ckpt (or an exported folder)")
    p.add_argument("--out", required=True, help="folder to write the exported model into")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx and check it against PyTorch")
    p.add_argument(
        "--parity-images",
        nargs="+",
        metavar="PATH",
        help="images or folders for the ONNX parity check (default: random inputs)",
    )
    p.add_argument("--sagemaker", action="store_true", help="also write model.tar.gz for a SageMaker endpoint")
    p.set_defaults(func=_export)

    p = sub.add_parser("serve", help="serve a model over HTTP as a SageMaker container does (/ping, /invocations)")
    p.add_argument("model", help=model_help)
    p.add_argument("--backend", choices=BACKENDS, default=default(predict.predict, "backend"))
    p.add_argument("--host", default=default(server.start_server, "host"))
    p.add_argument("--port", type=int, default=8080, help="SageMaker containers listen on 8080")
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=default(server.start_server, "max_body_bytes") / 2**20,
        help="larger bodies get 413",
    )
    p.add_argument("--max-images", type=int, default=handler.MAX_IMAGES, help="images per JSON request; more get 413")
    p.add_argument(
        "--max-batch",
        type=int,
        default=default(server.start_server, "max_batch"),
        help="images per forward pass across concurrent requests",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=default(server.start_server, "max_wait_ms"),
        help="how long a pass waits for more requests (0: take what is queued)",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("loadtest", help="a bounded load test of a local inference server: latency and throughput")
    p.add_argument("url", help="e.g. http://127.0.0.1:8080 (loopback only)")
    p.add_argument("images", nargs="+", help="image files or folders to send")
    p.add_argument("--requests", type=int, default=default(loadtest.load_test, "requests"))
    p.add_argument("--concurrency", type=int, default=default(loadtest.load_test, "concurrency"))
    p.add_argument("--distinct", type=int, default=64, help="how many different images to cycle through")
    p.set_defaults(func=_loadtest)

    p = sub.add_parser(
        "deploy",
        help="create a SageMaker endpoint (real-time or serverless) for a model; "
        "KEY=VALUE overrides of conf/deploy.yaml",
    )
    p.add_argument(
        "overrides", nargs="*", help="e.g. artifact=RUN/checkpoints/best.ckpt endpoint=serverless dry_run=true"
    )
    p.set_defaults(func=_deploy)

    p = sub.add_parser("delete-endpoint", help="delete a SageMaker endpoint, its endpoint config and its models")
    p.add_argument("name")
    p.add_argument("--region", help="default: AWS_REGION, else the AWS config's, else us-east-1")
    p.add_argument("--keep-model", action="store_true", help="delete only the endpoint and its config")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    p.set_defaults(func=_delete)
