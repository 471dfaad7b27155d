"""How good is it: train named recipes side by side on one fixed split, several seeds each, and report the
mean and spread of what a warehouse feels.

    python -m benchmarks quality                                  # quickstart, seeds 1,2,3 (~40 min, 2 cores)
    python -m benchmarks quality --recipes quickstart,cpu_hour --seeds 1,2,3
    python -m benchmarks quality --smoke                          # tiny: checks the whole chain runs (CI)

Each run is the user's own command (``python train.py experiment=R seed=S data.root=DIR``) in a subprocess
(a recipe that names its own folders, as ``cpu_hour`` does dev-224 and over5-224, keeps them, found beside
``--data``: ``paths.shared_abid=DIR/..``),
timed end to end, writing its usual run folder under ``--runs``; a folder that already holds a finished run
of the same recipe and seed is read, not trained again (``--retrain`` forces it). Then, from the run's best
checkpoint: test accuracy, RMSE, MAE, off-by-one, per-count accuracy and ECE before and after calibration
(the run's metrics.json), and the reconcile figures: records of the test bins corrupted by +-1 or +-2 items
at ``--record-error-rate`` (seeded), decided with the record-aware rule (threshold chosen on the
validation predictions for ``--target-precision``) and with the photo-only rule, measured against the truth;
and how right the records are among the quarter of bins the record-aware rule is surest of (the ranking's own
ceiling at 25 % auto-verified).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine
from bincount.paths import PROJECT_ROOT, shared_abid

DEFAULT_JSON = PROJECT_ROOT / "benchmarks" / "results" / "quality.json"
# tiny runs for --smoke: a few images, a tiny network, one epoch
SMOKE = [
    "data.limit_per_class=20",
    "data.image_size=32",
    "model.backbone=resnet10t",
    "trainer.max_epochs=1",
    "model.tta=hflip",
    "data.batch_size=16",
]
FIGURES = (
    "test/acc",
    "test/acc_exact",
    "test/rmse",
    "test/mae",
    "test/off_by_one",
    "test/ece",
    "test/ece_uncalibrated",
)


def recipe_data(recipe: str, data: Path, extra: list[str]) -> tuple[list[str], list[Path]]:
    """The overrides that point a recipe's runs at the data, and the folders they will read. A recipe that
    reads the default data folder reads ``data``; one that names its own folders (``cpu_hour``: dev-224 and
    over5-224 of the shared ABID copy) keeps them, taken from ``data``'s parent, so that passing
    ``data.root=DIR`` cannot silently drop the folders the recipe is made of."""
    from bincount.config import compose

    data = data.absolute()  # the runs start in the project root, wherever the benchmark was started
    base = [f"experiment={recipe}", f"paths.root_dir={PROJECT_ROOT}", *extra]
    cfg = compose("train", base)
    own = cfg.data.root != cfg.paths.data_dir
    overrides = [f"paths.shared_abid={data.parent}"] if own else [f"data.root={data}"]
    root = compose("train", base + overrides).data.root
    return overrides, [Path(r) for r in ([root] if isinstance(root, str) else root)]


def train_run(recipe: str, seed: int, pointing: list[str], run_dir: Path, extra: list[str], retrain: bool) -> dict:
    """Train (or reuse) one run, pointed at its data by ``pointing`` (``recipe_data``); its metrics.json plus the
    wall time of the command."""
    metrics_path = run_dir / "metrics.json"
    stamp = run_dir / "quality_run.json"
    if not retrain and metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if stamp.is_file():
            return {**metrics, **json.loads(stamp.read_text())}
        # a run trained by hand: its own duration (train(), without Python's start-up)
        return {**metrics, "wall_seconds": metrics.get("seconds"), "command": "(run trained outside the benchmark)"}
    cmd = [
        sys.executable,
        "train.py",
        f"experiment={recipe}",
        f"seed={seed}",
        *pointing,
        f"hydra.run.dir={run_dir}",
        "callbacks.rich_progress_bar=null",
        *extra,
    ]
    print(f"  training {recipe} seed {seed}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    started = time.time()
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env={**os.environ, "BINCOUNT_NO_PROGRESS": "1"}
    )
    if proc.returncode != 0:
        raise SystemExit(f"{recipe} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    info = {"wall_seconds": round(time.time() - started, 1), "command": " ".join(cmd[1:])}
    stamp.write_text(json.dumps(info))
    return {**json.loads(metrics_path.read_text()), **info}


def corrupt(true_counts: list[int], rate: float, spread: int, seed: int) -> list[int]:
    """Records of bins whose true counts are given: a share ``rate`` of them off by 1..spread items."""
    rng = np.random.default_rng(seed)
    records = []
    for c in true_counts:
        wrong = [c + d for d in range(-spread, spread + 1) if d and c + d >= 0]
        records.append(int(rng.choice(wrong)) if rng.random() < rate else c)
    return records


def surest_share_precision(model, predictions: list, records: list[int], share: float = 0.25) -> float | None:
    """How often the records are right among the ``share`` of bins with the highest P(record right | photo):
    what the best threshold for that share could reach on these bins (a ranking figure, chosen on the
    bins themselves, so an upper bound for a threshold chosen on validation). Records the model cannot
    make rank last. None when the share holds no bin."""
    from bincount.inventory import record_probability

    scored = [(record_probability(model, p, r), r == p.true_count) for p, r in zip(predictions, records)]
    ranked = sorted(scored, key=lambda s: -1.0 if s[0] is None else s[0], reverse=True)
    top = ranked[: int(share * len(ranked))]
    return round(sum(right for _, right in top) / len(top), 4) if top else None


def reconcile_figures(run_dir: Path, roots: list[Path], rate: float, spread: int, target: float, seed: int) -> dict:
    """Decide every test bin against corrupted records, with and without the record as evidence."""
    from bincount.data.sources import find_images, known_counts
    from bincount.inventory import Expected, RecordModel, calibrate, choose_record_threshold, reconcile, summarize
    from bincount.predict import predict_images, split_ids
    from bincount.serve.predictor import load_predictor

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    predictor = load_predictor(ckpt)
    sources = [str(r) for r in roots]
    images, truth = find_images(sources).images, known_counts(sources)
    by_split = {}
    for split in ("val", "test"):
        wanted = split_ids(ckpt, split)
        by_split[split], _ = predict_images(predictor, [p for p in images if p.stem in wanted], truth)
    test = by_split["test"]
    records = corrupt([p.true_count for p in test], rate, spread, seed)
    expected = {p.id: Expected(e) for p, e in zip(test, records)}
    out = {}
    record_model = RecordModel(rate, spread)
    for name, threshold, model in (
        ("record_aware", choose_record_threshold(record_model, by_split["val"], target, z=1.645), record_model),
        ("photo_only", calibrate(by_split["val"], target, z=1.645), None),
    ):
        decisions, unmatched = reconcile(test, expected, threshold.threshold, model)
        s = summarize(decisions, threshold, unmatched)
        lab = s["labelled"]
        out[name] = {
            "auto_verified_share": s["auto_verified_share"],
            "auto_verified_precision": lab["match_accuracy"],
            "wrong_records_caught": lab["wrong_records_caught"],
            "wrong_records": lab["wrong_records"],
            "threshold": round(threshold.threshold, 4),
            "bins": s["bins"],
        }
    out["record_aware"]["surest_quarter_precision"] = surest_share_precision(record_model, test, records)
    return out


def spread_of(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def aggregate(runs: list[dict]) -> dict:
    summary = {k: spread_of([r["metrics"].get(k) for r in runs]) for k in FIGURES}
    counts = sorted(
        {c for r in runs for c in r["metrics"]["test/acc_per_class"]}, key=lambda c: int(str(c).rstrip("+"))
    )
    summary["test/acc_per_class"] = {
        c: spread_of([r["metrics"]["test/acc_per_class"].get(c) for r in runs]) for c in counts
    }
    summary["wall_seconds"] = spread_of([r["wall_seconds"] for r in runs])
    for rule in ("record_aware", "photo_only"):
        summary[f"reconcile/{rule}"] = {
            k: spread_of([r["reconcile"][rule][k] for r in runs])
            for k in ("auto_verified_share", "auto_verified_precision", "wrong_records_caught")
        }
    summary["reconcile/record_aware"]["surest_quarter_precision"] = spread_of(
        [r["reconcile"]["record_aware"].get("surest_quarter_precision") for r in runs]
    )
    return summary


def _pm(s: dict, pct: bool = True) -> str:
    if s["mean"] is None:
        return "-"
    k = 100 if pct else 1
    return f"{s['mean'] * k:.1f} ± {s['std'] * k:.1f}" if pct else f"{s['mean']:.2f} ± {s['std']:.2f}"


def _acc(s: dict) -> str:
    """Test accuracy; with the overflow class also over the bins of an exact true count (comparable with a
    recipe without that class on the same bins)."""
    exact = s.get("test/acc_exact", {"mean": None})
    return _pm(s["test/acc"]) + (f" (exact-count bins: {_pm(exact)})" if exact["mean"] is not None else "")


def table(result: dict) -> str:
    lines = [
        "| recipe | seeds | test acc % | RMSE | MAE | off-by-one % | per count % | ECE (before) | "
        "auto-verified % (precision %) | wrong records caught % | precision % of the surest 25 % | wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, r in result["recipes"].items():
        s = r["summary"]
        per = " / ".join(f"{v['mean'] * 100:.0f}" for v in s["test/acc_per_class"].values())
        ra = s["reconcile/record_aware"]
        lines.append(
            f"| {recipe} | {','.join(str(x['seed']) for x in r['runs'])} | {_acc(s)} | {_pm(s['test/rmse'], False)} | "
            f"{_pm(s['test/mae'], False)} | {_pm(s['test/off_by_one'])} | {per} | "
            f"{s['test/ece']['mean']:.3f} ({s['test/ece_uncalibrated']['mean']:.3f}) | "
            f"{_pm(ra['auto_verified_share'])} ({_pm(ra['auto_verified_precision'])}) | {_pm(ra['wrong_records_caught'])} | "
            f"{_pm(ra['surest_quarter_precision'])} | {s['wall_seconds']['mean'] / 60:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks quality", description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="quickstart", help="comma-separated experiment names")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (the split is fixed)")
    p.add_argument(
        "--data",
        type=Path,
        default=shared_abid() / "dev-224",
        help="ABID-layout folder (a recipe naming its own folders takes them from beside it)",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=PROJECT_ROOT / "outputs" / "quality",
        help="run folders go here, one per recipe and seed",
    )
    p.add_argument("--json", type=Path, default=None, help=f"where to write the results (default {DEFAULT_JSON})")
    p.add_argument("--record-error-rate", type=float, default=0.2)
    p.add_argument("--record-error-spread", type=int, default=2)
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    p.add_argument("--smoke", action="store_true", help="tiny runs (a few images, one epoch): checks the chain")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_epochs=3")
    args = p.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    known = {f.stem for f in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml")}
    unknown = sorted(set(recipes) - known)
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    extra = (SMOKE if args.smoke else []) + list(args.overrides)
    json_path = args.json or (args.runs / "quality.json" if args.smoke else DEFAULT_JSON)
    result = {
        "smoke": args.smoke,
        "machine": machine(),
        "data": str(args.data),
        "overrides": extra,
        "record_errors": {
            "rate": args.record_error_rate,
            "spread": args.record_error_spread,
            "target_precision": args.target_precision,
        },
        "recipes": {},
    }
    for recipe in recipes:
        runs = []
        pointing, roots = recipe_data(recipe, args.data, extra)
        print(f"  {recipe} reads {', '.join(map(str, roots))}", file=sys.stderr, flush=True)
        for seed in seeds:
            run_dir = args.runs / recipe / f"seed{seed}"
            metrics = train_run(recipe, seed, pointing, run_dir, extra, args.retrain)
            recon = reconcile_figures(
                run_dir, roots, args.record_error_rate, args.record_error_spread, args.target_precision, seed
            )
            runs.append(
                {
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "wall_seconds": metrics.get("wall_seconds"),
                    "train_seconds": metrics.get("seconds"),
                    "command": metrics.get("command"),
                    "metrics": {
                        k: metrics[k]
                        for k in (
                            *FIGURES,
                            "test/acc_per_class",
                            "test/images",
                            "test/majority_rate",
                            "test/temperature",
                        )
                        if k in metrics  # test/acc_exact: only with the overflow class
                    },
                    "reconcile": recon,
                }
            )
            print(
                f"  {recipe} seed {seed}: acc {metrics['test/acc']:.3f}, ECE {metrics['test/ece']:.3f}, "
                f"auto-verified {recon['record_aware']['auto_verified_share']}",
                file=sys.stderr,
                flush=True,
            )
        result["recipes"][recipe] = {"data": [str(r) for r in roots], "runs": runs, "summary": aggregate(runs)}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
    result["machine"]["load_average_end"] = machine()["load_average"]
    json_path.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nmachine: {json.dumps(result['machine'])}\nwritten: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
