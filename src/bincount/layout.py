"""A run folder's layout: every file a run writes is named here and nowhere else.

A run is one folder (Hydra's run directory, ``outputs/train/runs/<time>/``)::

    RUN/metrics.json                test metrics, best validation score, data summary, seconds
    RUN/split_manifest.csv          id,label,split of every image used (also in a prepared data folder)
    RUN/data_report.json            what the data reader skipped, by reason, with the ids
    RUN/checkpoints/best.ckpt       the best checkpoint (last.ckpt beside it)
    RUN/history.json, curves.png    per-epoch metrics and learning curves
    RUN/confusion_matrix.png        of the test split
    RUN/reliability.png             calibration of the test split (reliability diagram)
    RUN/debugger/                   the in-process debugger: tensors.jsonl, losses.jsonl, report.json, report.png
    RUN/utilization.csv, .json      the system monitor's samples and summary
    RUN/cost_report.md, .json       `bincount cost-report RUN`
    RUN/sagemaker_request.json      a SageMaker dry run's request (sagemaker_job.json once submitted)

A sweep folder (``outputs/train/multiruns/<time>/``) holds one run folder per trial (``0/``, ``1/``, ...)
and ``sweep_summary.{md,json,png}``.
"""

from __future__ import annotations

from pathlib import Path

METRICS = "metrics.json"
MANIFEST = "split_manifest.csv"
DATA_REPORT = "data_report.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
HISTORY = "history.json"
CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"
RELIABILITY = "reliability.png"  # calibration of the test split

DEBUGGER_DIR = "debugger"
DEBUG_TENSORS = "tensors.jsonl"
DEBUG_LOSSES = "losses.jsonl"
DEBUG_REPORT = "report.json"
DEBUG_PLOT = "report.png"

UTILIZATION_CSV = "utilization.csv"
UTILIZATION_JSON = "utilization.json"
COST_REPORT = "cost_report"  # .md and .json

SAGEMAKER_REQUEST = "sagemaker_request.json"
SAGEMAKER_JOB = "sagemaker_job.json"
SAGEMAKER_TUNING_REQUEST = "sagemaker_tuning_request.json"
SAGEMAKER_TUNING_JOB = "sagemaker_tuning_job.json"
SOURCE_TARBALL = "sourcedir.tar.gz"

SWEEP_SUMMARY = "sweep_summary"  # .md, .json and .png


def run_of_checkpoint(ckpt: str | Path) -> Path:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/best.ckpt`` -> ``RUN``)."""
    return Path(ckpt).resolve().parent.parent


def checkpoint_run_dir(ckpt: str | Path) -> Path | None:
    """The run folder of train.py a checkpoint was written into (``RUN/checkpoints/last.ckpt`` -> ``RUN``,
    recognised by the ``.hydra`` folder Hydra leaves in every run folder); None for a checkpoint elsewhere."""
    ckpt = Path(ckpt)
    run = ckpt.parent.parent
    return run if ckpt.parent.name == CHECKPOINT_DIR and (run / ".hydra").is_dir() else None


def manifest_of_checkpoint(ckpt: str | Path) -> Path | None:
    """The split manifest of the run a checkpoint came from, or None when there is none beside it."""
    candidate = run_of_checkpoint(ckpt) / MANIFEST
    return candidate if candidate.is_file() else None


def best_checkpoint(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT_DIR / BEST_CHECKPOINT
