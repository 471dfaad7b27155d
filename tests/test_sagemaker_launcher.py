"""launcher=sagemaker through the real SageMaker SDK (v2): the dry run prints a request botocore
validates, without credentials; a real submission goes to an AWS API server on loopback (moto serving
S3, SageMaker, CloudWatch Logs and STS), which records what it received; the job's logs are followed and
its model.tar.gz lands in the local run directory."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.session
import pytest
import tomllib
from botocore.validate import ParamValidator
from hydra.utils import instantiate

import bincount.launch
from bincount.aws.sagemaker_job import REQUIREMENTS as REQUIREMENTS_NAME
from bincount.launch.sagemaker import job_hyperparameters
from bincount.paths import PROJECT_ROOT
from conftest import compose_cfg

BUCKET = "bincount-test"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
JOB = "bincount-test-job"
REQUIREMENTS = Path(bincount.launch.__file__).with_name(REQUIREMENTS_NAME)


def validate_create_training_job(request: dict) -> None:
    """Raise if the request does not fit the CreateTrainingJob API model (types, required fields, sizes)."""
    model = botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob")
    report = ParamValidator().validate(request, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_dry_run_prints_a_valid_request_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    env.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "experiment=resnet50",
            "launcher=sagemaker",
            "launcher.dry_run=true",
            "model.optimizer.lr=0.0003",
            f"hydra.run.dir={run}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    request = json.loads((run / "sagemaker_request.json").read_text())
    assert json.dumps(request, indent=2) in out.stdout
    assert "no AWS credentials" in out.stdout
    # the SDK v2's deprecation, config-search and telemetry notices are silenced (bincount uses v2 on purpose)
    said = (out.stdout + out.stderr).lower()
    assert not any(notice in said for notice in ("deprecation", "telemetry", "sagemaker.config")), said[-3000:]
    validate_create_training_job(request)
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert "pytorch-training:2.5.1-cpu-py311" in request["AlgorithmSpecification"]["TrainingImage"]
    assert {k: json.loads(v) for k, v in request["HyperParameters"].items() if not k.startswith("sagemaker_")} == {
        "experiment": "resnet50",
        "model.optimizer.lr": "0.0003",
    }
    assert (run / "sourcedir.tar.gz").is_file()


def test_hyperparameters_keep_only_the_training_overrides():
    assert job_hyperparameters(
        [
            "experiment=resnet50",
            "launcher=sagemaker",
            "launcher.job.wait=false",
            "hydra.run.dir=/x",
            "data.root=/local",
            "paths.log_dir=/y",
            "trainer.devices=4",
            "data.batch_size=32",
        ]
    ) == {"experiment": "resnet50", "data.batch_size": "32"}


def _model_tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def aws_env(aws, monkeypatch, tmp_path):
    """Every boto3 client of the SDK talks to the loopback server; the server records each request."""
    from moto.moto_api import recorder

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    monkeypatch.setattr(recorder, "_location", str(tmp_path / "moto_recording"))
    for action in ("reset-recording", "start-recording"):
        urllib.request.urlopen(urllib.request.Request(f"{aws}/moto-api/recorder/{action}", method="POST")).read()
    yield aws
    urllib.request.urlopen(urllib.request.Request(f"{aws}/moto-api/recorder/stop-recording", method="POST")).read()


def received(aws: str, target: str) -> list[dict]:
    """The bodies of the JSON API calls the server received for one operation (X-Amz-Target)."""
    text = urllib.request.urlopen(f"{aws}/moto-api/recorder/download-recording").read().decode()
    calls = []
    for line in filter(None, text.splitlines()):
        entry = json.loads(line)
        if entry["headers"].get("X-Amz-Target", "").endswith(f".{target}"):
            body = entry["body"]
            if entry["body_encoded"]:
                import base64

                body = base64.b64decode(body).decode()
            calls.append(json.loads(body))
    return calls


def test_submits_follows_and_fetches_through_the_sdk(aws_env, tmp_path, capsys):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    # what the job will have produced: its model.tar.gz (as moto reports it) and its log stream
    s3.put_object(
        Bucket=BUCKET,
        Key=f"bincount/output/{JOB}/output/model.tar.gz",
        Body=_model_tarball(
            {"metrics.json": json.dumps({"best_val": {"val/acc": 0.625}}).encode(), "checkpoints/best.ckpt": b"weights"}
        ),
    )
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{JOB}/algo-1-1700000000")
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=f"{JOB}/algo-1-1700000000",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "bincount: host algo-1 = node 0 of 2"}],
    )

    run = tmp_path / "run"
    cfg = compose_cfg(
        "train",
        [
            "experiment=resnet50",
            "model.optimizer.lr=0.0003",
            "launcher=sagemaker",
            f"launcher.aws.role={ROLE}",
            f"launcher.aws.bucket={BUCKET}",
            f"launcher.job.name={JOB}",
        ],
        run,
    )
    score = instantiate(cfg.launcher).launch(cfg)

    sm = boto3.client("sagemaker")
    job = sm.describe_training_job(TrainingJobName=JOB)
    assert job["ResourceConfig"]["InstanceCount"] == 2 and job["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert job["RoleArn"] == ROLE
    hp = {k: json.loads(v) for k, v in job["HyperParameters"].items()}
    assert hp["experiment"] == "resnet50" and hp["model.optimizer.lr"] == "0.0003"
    assert hp["sagemaker_program"] == "sagemaker_train.py"
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"]) for c in job["InputDataConfig"]] == [
        ("train", f"s3://{BUCKET}/bincount/data/abid")
    ]
    assert (
        job["EnableManagedSpotTraining"]
        and job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= job["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    assert job["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/bincount/checkpoints/{JOB}"
    hook = job["DebugHookConfig"]
    assert hook["HookParameters"] == {"save_interval": "100"}
    assert {c["CollectionName"] for c in hook["CollectionConfigurations"]} >= {
        "weights",
        "biases",
        "gradients",
        "losses",
    }
    assert {r["RuleConfigurationName"] for r in job["DebugRuleConfigurations"]} == {
        "VanishingGradient",
        "Overfit",
        "Overtraining",
        "PoorWeightInitialization",
        "LossNotDecreasing",
    }

    # the profiler settings are not in moto's DescribeTrainingJob: read them from the request it received
    (request,) = received(aws_env, "CreateTrainingJob")
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert [r["RuleConfigurationName"] for r in request["ProfilerRuleConfigurations"]] == ["ProfilerReport"]
    assert request["Environment"]["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] == "python"
    validate_create_training_job(request)

    # the code the job runs was uploaded, with the container's requirements
    bucket, key = hp["sagemaker_submit_directory"].removeprefix("s3://").split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        names = set(tar.getnames())
        assert {
            "sagemaker_train.py",
            "requirements.txt",
            "bincount/conf/launcher/sagemaker.yaml",
            "bincount/launch/sagemaker_entry.py",
            "bincount/cli/train.py",
        } <= names
        assert b"smdebug==1.0.34" in tar.extractfile("requirements.txt").read()
        assert not any(n.startswith((".venv", "tests", "outputs")) or "__pycache__" in n for n in names)

    # logs were followed, outputs fetched into the run dir, and the best score returned (for sweeps)
    assert "node 0 of 2" in capsys.readouterr().out
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == b"weights"
    assert score == 0.625
    summary = json.loads((run / "sagemaker_job.json").read_text())
    assert summary["debugger_tensors"] == f"s3://{BUCKET}/bincount/output/{JOB}/debug-output"


def test_submission_without_a_role_says_how_to_set_one(aws_env, tmp_path, monkeypatch):
    from bincount.errors import BincountError

    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    cfg = compose_cfg("train", ["launcher=sagemaker", f"launcher.aws.bucket={BUCKET}"], tmp_path / "run")
    with pytest.raises(BincountError, match="launcher.aws.role"):
        instantiate(cfg.launcher).launch(cfg)
    assert received(aws_env, "CreateTrainingJob") == []


def _names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[<>=!~\[; ]", r.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
        if r.strip() and not r.strip().startswith("#")
    }


def test_the_job_installs_every_dependency_but_torch():
    """The container brings torch/torchvision; everything else bincount imports comes from the job's
    requirements.txt, which must follow pyproject.toml."""
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = _names(deps) - {"torch", "torchvision"} - _names(REQUIREMENTS.read_text().splitlines())
    assert not missing, f"add {sorted(missing)} to {REQUIREMENTS}"
