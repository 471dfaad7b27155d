"""`train.py -m hparams_search=optuna launcher=sagemaker`: the search space of the local Optuna sweep
becomes a SageMaker HyperparameterTuner job. The dry run builds a request botocore validates, without
credentials; a real submission goes to the AWS API server on loopback (moto), which keeps what it got."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import botocore.session
from botocore.validate import ParamValidator
from omegaconf import OmegaConf

from bincount.launch.sagemaker_tuner import tune
from bincount.paths import PROJECT_ROOT
from conftest import compose_cfg

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
SEARCH = {  # conf/hparams_search/optuna.yaml, as SageMaker ranges
    "continuous": {
        "model.optimizer.lr": ("0.0001", "0.01", "Logarithmic"),
        "data.augment.color_jitter": ("0.0", "0.4", "Auto"),
    },
    "categorical": {
        "model.optimizer.weight_decay": ["0.0", "0.0001", "0.001", "0.01"],
        "data.augment.rotation": ["0", "15", "30"],
    },
}


def check_ranges(config: dict, batch_sizes: list[str]) -> None:
    ranges = config["ParameterRanges"]
    assert {
        r["Name"]: (r["MinValue"], r["MaxValue"], r["ScalingType"]) for r in ranges["ContinuousParameterRanges"]
    } == SEARCH["continuous"]
    # the PyTorch estimator JSON-encodes values; the container's toolkit decodes them into --key value
    categorical = {r["Name"]: [json.loads(v) for v in r["Values"]] for r in ranges["CategoricalParameterRanges"]}
    assert categorical == {**SEARCH["categorical"], "data.batch_size": batch_sizes}  # backbone fixed below
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val/acc_best"}


def test_dry_run_builds_a_valid_tuning_request_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        }
    )
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hparams_search=optuna",
            "launcher=sagemaker",
            "launcher.dry_run=true",
            "hydra.sweeper.n_trials=12",
            "data.batch_size=choice(16,32)",
            "model.backbone=resnet18",
            "data.root=/local/abid",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    request = json.loads((sweep / "sagemaker_tuning_request.json").read_text())
    assert "no AWS credentials" in out.stdout
    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(request, model.operation_model("CreateHyperParameterTuningJob").input_shape)
    assert not report.has_errors(), report.generate_report()
    config = request["HyperParameterTuningJobConfig"]
    check_ranges(config, ["16", "32"])
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 2}
    job = request["TrainingJobDefinition"]
    static = {k: json.loads(v) for k, v in job["StaticHyperParameters"].items() if not k.startswith("sagemaker_")}
    # a trial is a plain run of train.py: no hparams_search, no local paths, the search's metric and no test
    assert static == {
        "model.backbone": "resnet18",
        "optimized_metric": "val/acc",
        "optimized_mode": "max",
        "test": "false",
    }
    names = {m["Name"] for m in job["AlgorithmSpecification"]["MetricDefinitions"]}
    assert names == {"val/acc", "val/acc_best"}
    assert "CheckpointConfig" not in job  # trials never resume from one another
    assert not (sweep / "0").exists()  # nothing ran locally


def test_tuning_job_is_submitted_to_the_loopback_server(aws, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    sweep = tmp_path / "sweep"
    cfg = compose_cfg(
        "train",
        [
            "hparams_search=optuna",
            "launcher=sagemaker",
            f"launcher.aws.role={ROLE}",
            "launcher.aws.bucket=bincount-hpo-test",
            "launcher.job.wait=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path / "run",
    )
    boto3.client("s3").create_bucket(Bucket="bincount-hpo-test")
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert settings.pop("_target_").endswith("SageMakerTunerSweeper")
    tune(cfg, ["data.batch_size=choice(32,64)", "model.backbone=resnet34"], **settings)

    submitted = json.loads((sweep / "sagemaker_tuning_job.json").read_text())
    name = submitted["HyperParameterTuningJobName"]
    stored = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    check_ranges(stored["HyperParameterTuningJobConfig"], ["32", "64"])
    assert stored["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 20
    definition = stored["TrainingJobDefinition"]
    assert definition["RoleArn"] == ROLE
    assert json.loads(definition["StaticHyperParameters"]["model.backbone"]) == "resnet34"
    code = json.loads(definition["StaticHyperParameters"]["sagemaker_submit_directory"])
    bucket, _, key = code.removeprefix("s3://").partition("/")
    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)  # the source was uploaded where trials look
    assert head["ContentLength"] == (sweep / "sourcedir.tar.gz").stat().st_size


def test_the_tuner_minimises_when_the_run_does(tmp_path, monkeypatch):
    """optimized_mode=min: the tuning job's objective is minimised, and each trial keeps the mode."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = compose_cfg(
        "train",
        [
            "hparams_search=optuna",
            "launcher=sagemaker",
            "launcher.dry_run=true",
            "optimized_metric=val/mae",
            "optimized_mode=min",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path / "run",
    )
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings.pop("_target_")
    request = tune(cfg, [], **settings)
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "val/mae_best"}
    static = request["TrainingJobDefinition"]["StaticHyperParameters"]
    assert json.loads(static["optimized_mode"]) == "min" and json.loads(static["optimized_metric"]) == "val/mae"
