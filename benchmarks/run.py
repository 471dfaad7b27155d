"""Run every benchmark, print one table, write it as JSON.

    python -m benchmarks                 # everything (about 10 minutes on 2 CPU cores)
    python -m benchmarks --smoke         # tiny sizes: checks that each benchmark runs (CI)
    python -m benchmarks --only loader,inference --json out.json
    python -m benchmarks quality         # counting quality of the recipes, several seeds (benchmarks/quality.py)

Every figure is a ratio of two things measured side by side in the same run (calls alternate), so
other load on a shared machine falls on both; the JSON keeps each round's raw values, the machine and
its load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from benchmarks.common import Row, Skipped, machine, table
from bincount.paths import PROJECT_ROOT, shared_abid

BENCHMARKS = ("loader", "overhead", "inference", "gpu")
DEFAULT_JSON = PROJECT_ROOT / "outputs" / "benchmarks" / "results.json"


def _run_one(name: str, args: argparse.Namespace, cache: Path) -> list[Row | Skipped]:
    if name == "loader":
        from benchmarks import loader

        return loader.run(args.abid, cache, args.smoke)
    if name == "overhead":
        from benchmarks import overhead

        return overhead.run(args.smoke)
    if name == "inference":
        from benchmarks import inference

        return inference.run(args.smoke, args.threads)
    from benchmarks import gpu

    return gpu.run(args.gpu_data, cache, args.smoke)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quality"]:
        from benchmarks import quality

        return quality.main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps: check that everything runs")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument(
        "--abid", type=Path, default=shared_abid(), help="the ABID development copy (its raw/ folder is read)"
    )
    p.add_argument(
        "--gpu-data",
        type=Path,
        default=None,
        help="ABID-layout or packed folder for the GPU benchmark (default: ABID's dev-224)",
    )
    p.add_argument("--cache", type=Path, default=None, help="packed copies are kept here (default: beside --json)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for PyTorch and ONNX Runtime (default: all cores); 1 on a machine shared with "
        "other work, where OpenMP threads waiting on a descheduled peer distort every figure",
    )
    args = p.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.gpu_data = args.gpu_data or args.abid / "dev-224"
    cache = args.cache or args.json.parent / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("BINCOUNT_NO_PROGRESS", "1")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows: list[Row | Skipped] = []
    started = time.time()
    info = machine()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        t = time.time()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += _run_one(name, args, cache)
        print(f"  {name}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
        info["load_average_end"] = machine()["load_average"]
        result = {
            "smoke": args.smoke,
            "machine": info,
            "seconds": round(time.time() - started, 1),
            "rows": [r.to_dict() for r in rows],
        }
        args.json.write_text(json.dumps(result, indent=2))  # after each benchmark: a later failure keeps these
    print(table(rows))
    print(f"\nmachine: {json.dumps(info)}\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
