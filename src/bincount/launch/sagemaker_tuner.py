"""A search on SageMaker: `python train.py -m hparams_search=optuna launcher=sagemaker [launcher.dry_run=true]`.

The search space of the hparams_search config (Hydra sweep syntax, the same one Optuna reads locally)
becomes the parameter ranges of one SageMaker HyperparameterTuner job; every trial is a training job
built by the SageMaker launcher (conf/launcher/sagemaker.yaml) with the command line's other overrides
as fixed hyperparameters. Trials print their metric (bincount.callbacks.objective_log.ObjectiveLog), which the tuner
reads from the job logs. With ``launcher.dry_run=true`` the SDK builds and botocore validates the
CreateHyperParameterTuningJob request, which is written to the sweep folder and not sent.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.launch.sagemaker import SageMakerLauncher, job_hyperparameters
from bincount.layout import SAGEMAKER_TUNING_JOB, SAGEMAKER_TUNING_REQUEST, SWEEP_SUMMARY
from bincount.objective import direction
from bincount.sweeps import render_markdown

log = logging.getLogger(__name__)
# overrides that make this process a sweep; a trial in the container is a plain run
NOT_FOR_TRIALS = ("hparams_search",)


def metric_definitions(metric: str) -> list[dict[str, str]]:
    """Regexes for the lines bincount.callbacks.objective_log.ObjectiveLog prints: the metric per validation and its best."""
    number = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
    return [
        {"Name": metric, "Regex": f"bincount: {re.escape(metric)}={number}"},
        {"Name": f"{metric}_best", "Regex": f"bincount: {re.escape(metric)}_best={number}"},
    ]


def split_search(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The search space (config params, replaced by sweeps given on the command line) as SageMaker
    parameter ranges, and the command line's plain overrides (fixed for every trial)."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    parser = OverridesParser.create()
    declared = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    given = parser.parse_overrides(arguments)
    space = {o.get_key_element(): o for o in declared}
    fixed = []
    for o in given:
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = o
        else:
            space.pop(key, None)  # a plain value on the command line fixes a searched parameter
            fixed.append(o.input_line)
    ranges = {}
    for key, o in space.items():
        if not o.is_sweep_override():
            fixed.append(o.input_line)
        elif o.is_interval_sweep():
            value = o.value()
            scaling = "Logarithmic" if "log" in value.tags else "Auto"
            kind = (
                IntegerParameter if isinstance(value.start, int) and isinstance(value.end, int) else ContinuousParameter
            )
            ranges[key] = kind(value.start, value.end, scaling_type=scaling)
        else:  # choice(...) and range(...): the listed values
            ranges[key] = CategoricalParameter([str(v) for v in o.sweep_string_iterator()])
    if not ranges:
        raise BincountError("hparams_search: the search space is empty; list parameters under hydra.sweeper.params")
    return ranges, fixed


def tune(
    cfg: DictConfig,
    arguments: list[str],
    *,
    params: dict | None,
    n_trials: int,
    max_parallel_jobs: int,
    strategy: str,
    early_stopping: str,
    base_tuning_job_name: str,
    **optuna_only: Any,
) -> dict:
    """Build (and unless dry_run, submit) one HyperparameterTuner job; returns its request or description.
    The objective is ``optimized_metric``, maximised or minimised as ``optimized_mode`` says (the sweeper's
    ``direction`` follows it). The settings are conf/hydra/sweeper/search_on_sagemaker.yaml's (and the
    search's); those only Optuna understands (sampler, storage, ...) are ignored."""
    from sagemaker.tuner import HyperparameterTuner
    from sagemaker.utils import name_from_base

    launcher: SageMakerLauncher = instantiate(cfg.launcher)
    out = Path(cfg.hydra.sweep.dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges, fixed = split_search(dict(params or {}), arguments)
    fixed = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in NOT_FOR_TRIALS]
    # the trial runs train.py without hparams_search: carry over what the search config set for trials
    fixed += [
        f"optimized_metric={cfg.optimized_metric}",
        f"optimized_mode={cfg.optimized_mode}",
        f"test={str(bool(cfg.test)).lower()}",
    ]
    static = job_hyperparameters(fixed)

    sm = launcher.session()
    name = name_from_base(base_tuning_job_name, short=True)
    source, source_key = launcher.source(sm, out, name)
    estimator = launcher.estimator(static, sm, f"s3://{sm.bucket_name}/{source_key}", name)
    # Each trial starts fresh: with one checkpoint prefix for all, a trial would resume from another's last.ckpt.
    estimator.checkpoint_s3_uri = None
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name=f"{cfg.optimized_metric}_best",
        hyperparameter_ranges=ranges,
        metric_definitions=metric_definitions(cfg.optimized_metric),
        strategy=strategy,
        objective_type=direction(cfg.optimized_mode).capitalize(),
        max_jobs=int(n_trials),
        max_parallel_jobs=int(max_parallel_jobs),
        early_stopping_type=early_stopping,
        base_tuning_job_name=base_tuning_job_name,
    )
    channels = launcher.channels(sm)

    def submit():
        tuner.fit(channels, job_name=name, wait=False)

    if launcher.dry_run:
        request = sm.capture(
            sm.sdk.sagemaker_client, "CreateHyperParameterTuningJob", {"HyperParameterTuningJobArn": "dry-run"}, submit
        )
        sm.write_dry_run(request, out / SAGEMAKER_TUNING_REQUEST, f"CreateHyperParameterTuningJob of {name}")
        return request

    sm.upload(source, source_key)
    submit()
    job = sm.sdk.sagemaker_client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    (out / SAGEMAKER_TUNING_JOB).write_text(json.dumps(job, indent=2, default=str))
    log.info(
        "submitted SageMaker tuning job %s (%d trials, %d at once): %s",
        name,
        n_trials,
        max_parallel_jobs,
        sm.console("hyper-tuning-jobs", name),
    )
    if launcher.job.wait:
        tuner.wait()
        write_tuning_summary(sm.sdk, name, out, cfg.optimized_metric)
    return job


def write_tuning_summary(session, name: str, out: Path, metric: str) -> dict:
    """The finished tuning job's trials in the format of a local sweep's summary (sweep_summary.json/.md)."""
    client, trials, token = session.sagemaker_client, [], None
    while True:
        page = client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100, **({"NextToken": token} if token else {})
        )
        trials += page["TrainingJobSummaries"]
        token = page.get("NextToken")
        if not token:
            break
    job = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    maximize = job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
    rows = []
    for i, t in enumerate(sorted(trials, key=lambda t: t["CreationTime"])):
        value = (t.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        seconds = (t["TrainingEndTime"] - t["TrainingStartTime"]).total_seconds() if t.get("TrainingEndTime") else None
        rows.append(
            {
                "trial": i,
                "dir": t["TrainingJobName"],
                "overrides": dict(t.get("TunedHyperParameters", {})),
                "value": value,
                "seconds": seconds,
                "epochs": None,
                "test_acc": None,
                "status": t["TrainingJobStatus"].lower(),
            }
        )
    done = [r for r in rows if r["value"] is not None]
    best = (max if maximize else min)(done, key=lambda r: r["value"]) if done else None
    summary = {
        "sweep_dir": str(out),
        "metric": f"{metric}_best",
        "direction": "maximize" if maximize else "minimize",
        "swept": sorted({k for r in rows for k in r["overrides"]}),
        "trials": rows,
        "completed": len(done),
        "best": None,
        "tuning_job": name,
    }
    if best:
        summary["best"] = {
            "trial": best["trial"],
            "value": best["value"],
            "dir": best["dir"],
            "params": best["overrides"],
            "command": "python train.py " + " ".join(f"{k}={v}" for k, v in best["overrides"].items()),
        }
    (out / f"{SWEEP_SUMMARY}.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / f"{SWEEP_SUMMARY}.md").write_text(render_markdown(summary))
    return summary
