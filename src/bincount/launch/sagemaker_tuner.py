"""A search on SageMaker: `python train.py -m hparams_search=optuna launcher=sagemaker [launcher.dry_run=true]`.

The search space of the hparams_search config (Hydra sweep syntax, the same one Optuna reads locally)
becomes the parameter ranges of one SageMaker HyperparameterTuner job; every trial is a training job
built by the SageMaker launcher (conf/launcher/sagemaker.yaml) with the command line's other overrides
as fixed hyperparameters. Trials print their metric (bincount.sweeps.ObjectiveLog), which the tuner
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
from bincount.launch.sagemaker import PLACEHOLDER_ACCOUNT, capture_request, job_hyperparameters, pack_source

log = logging.getLogger(__name__)

REQUEST_NAME = "sagemaker_tuning_request.json"
JOB_NAME = "sagemaker_tuning_job.json"
# overrides that make this process a sweep; a trial in the container is a plain run
NOT_FOR_TRIALS = ("hparams_search",)


def metric_definitions(metric: str) -> list[dict[str, str]]:
    """Regexes for the lines bincount.sweeps.ObjectiveLog prints: the metric per validation and its best."""
    number = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
    return [{"Name": metric, "Regex": f"bincount: {re.escape(metric)}={number}"},
            {"Name": f"{metric}_best", "Regex": f"bincount: {re.escape(metric)}_best={number}"}]


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
            kind = IntegerParameter if isinstance(value.start, int) and isinstance(value.end, int) else ContinuousParameter
            ranges[key] = kind(value.start, value.end, scaling_type=scaling)
        else:  # choice(...) and range(...): the listed values
            ranges[key] = CategoricalParameter([str(v) for v in o.sweep_string_iterator()])
    if not ranges:
        raise BincountError("hparams_search: the search space is empty; list parameters under hydra.sweeper.params")
    return ranges, fixed


def _capture(session, tuner, channels, name: str) -> dict:
    """The CreateHyperParameterTuningJob request, built and validated, not sent (as the launcher's dry run)."""
    return capture_request(session, "CreateHyperParameterTuningJob", {"HyperParameterTuningJobArn": "dry-run"},
                           lambda: tuner.fit(channels, job_name=name, wait=False))


def tune(cfg: DictConfig, arguments: list[str], params: dict | None = None, direction: str = "maximize",
         n_trials: int = 20, max_parallel_jobs: int = 2, strategy: str = "Bayesian", early_stopping: str = "Off",
         base_tuning_job_name: str = "bincount-hpo", **optuna_only: Any) -> dict:
    """Build (and unless dry_run, submit) one HyperparameterTuner job; returns its request or description.
    Settings that only Optuna understands (sampler, storage, n_jobs, ...) are ignored."""
    from sagemaker.tuner import HyperparameterTuner
    from sagemaker.utils import name_from_base

    launcher = instantiate(cfg.launcher)
    out = Path(cfg.hydra.sweep.dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges, fixed = split_search(dict(params or {}), arguments)
    fixed = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in NOT_FOR_TRIALS]
    # the trial runs train.py without hparams_search: carry over what the search config set for trials
    fixed += [f"optimized_metric={cfg.optimized_metric}", f"test={str(bool(cfg.test)).lower()}"]
    static = job_hyperparameters(fixed)

    boto, session, has_credentials = launcher._sessions()
    account = launcher._account(boto, has_credentials)
    bucket = launcher.bucket or (f"sagemaker-{boto.region_name}-{account}" if launcher.dry_run
                                 else session.default_bucket())
    role = launcher._role(account)
    name = name_from_base(base_tuning_job_name, short=True)
    launcher.job_name = launcher.job_name or name
    s3_root = f"s3://{bucket}/{launcher.prefix}"
    source = pack_source(out / "sourcedir.tar.gz")
    source_key = f"{launcher.prefix}/code/{name}/sourcedir.tar.gz"
    estimator = launcher.estimator(static, role, s3_root, f"s3://{bucket}/{source_key}", session)
    # Each trial starts fresh: with one checkpoint prefix for all, a trial would resume from another's last.ckpt.
    estimator.checkpoint_s3_uri = None
    tuner = HyperparameterTuner(
        estimator, objective_metric_name=f"{cfg.optimized_metric}_best", hyperparameter_ranges=ranges,
        metric_definitions=metric_definitions(cfg.optimized_metric), strategy=strategy,
        objective_type="Minimize" if "min" in str(direction).lower() else "Maximize",
        max_jobs=int(n_trials), max_parallel_jobs=int(max_parallel_jobs), early_stopping_type=early_stopping,
        base_tuning_job_name=base_tuning_job_name)
    channels = launcher._channels(s3_root)

    if launcher.dry_run:
        request = _capture(session, tuner, channels, name)
        (out / REQUEST_NAME).write_text(json.dumps(request, indent=2))
        print(json.dumps(request, indent=2))
        if not has_credentials:
            print(f"dry run: no AWS credentials, so account {PLACEHOLDER_ACCOUNT} and the role are placeholders; "
                  "nothing was uploaded or submitted")
        log.info("dry run: CreateHyperParameterTuningJob request for %s written to %s", name, out / REQUEST_NAME)
        return request

    boto.client("s3").upload_file(str(source), bucket, source_key)
    tuner.fit(channels, job_name=name, wait=False)
    job = session.sagemaker_client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    (out / JOB_NAME).write_text(json.dumps(job, indent=2, default=str))
    region = boto.region_name
    log.info("submitted SageMaker tuning job %s (%d trials, %d at once): https://%s.console.aws.amazon.com/"
             "sagemaker/home?region=%s#/hyper-tuning-jobs/%s", name, n_trials, max_parallel_jobs, region, region, name)
    if launcher.wait:
        tuner.wait()
        write_tuning_summary(session, name, out, cfg.optimized_metric)
    return job


def write_tuning_summary(session, name: str, out: Path, metric: str) -> dict:
    """The finished tuning job's trials in the format of a local sweep's summary (sweep_summary.json/.md)."""
    from bincount.sweeps import SUMMARY_NAME, render_markdown

    client, trials, token = session.sagemaker_client, [], None
    while True:
        page = client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100, **({"NextToken": token} if token else {}))
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
        rows.append({"trial": i, "dir": t["TrainingJobName"], "overrides": dict(t.get("TunedHyperParameters", {})),
                     "value": value, "seconds": seconds, "epochs": None, "test_acc": None,
                     "status": t["TrainingJobStatus"].lower()})
    done = [r for r in rows if r["value"] is not None]
    best = (max if maximize else min)(done, key=lambda r: r["value"]) if done else None
    summary = {"sweep_dir": str(out), "metric": f"{metric}_best", "direction": "maximize" if maximize else "minimize",
               "swept": sorted({k for r in rows for k in r["overrides"]}), "trials": rows, "completed": len(done),
               "best": None, "tuning_job": name}
    if best:
        summary["best"] = {"trial": best["trial"], "value": best["value"], "dir": best["dir"],
                           "params": best["overrides"], "command": "python train.py " + " ".join(
                               f"{k}={v}" for k, v in best["overrides"].items())}
    (out / f"{SUMMARY_NAME}.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / f"{SUMMARY_NAME}.md").write_text(render_markdown(summary))
    return summary
