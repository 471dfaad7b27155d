"""`bincount cost-report` for SageMaker jobs: the instance metrics SageMaker publishes to CloudWatch,
served by the AWS API server on loopback (moto), become the same report as a local run's; and the
price table says where its prices come from. (The report on a real local run: test_system_monitor.py.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from bincount.aws.cloudwatch import CLOUDWATCH_NAMESPACE
from bincount.cli import main as cli
from bincount.reports.sizing import load_prices

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def sagemaker_job(name: str, instance_type: str, minutes: dict[str, list[float]]) -> None:
    """A training job on the loopback server and its per-minute instance metrics in CloudWatch."""
    boto3.client("sagemaker").create_training_job(
        TrainingJobName=name,
        RoleArn=ROLE,
        AlgorithmSpecification={
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1",
            "TrainingInputMode": "File",
        },
        OutputDataConfig={"S3OutputPath": "s3://bucket/output"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    cloudwatch = boto3.client("cloudwatch")
    for metric, values in minutes.items():
        cloudwatch.put_metric_data(
            Namespace=CLOUDWATCH_NAMESPACE,
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": "Host", "Value": f"{name}/algo-1"}],
                    "Timestamp": start + timedelta(minutes=i, seconds=30),
                    "Value": v,
                    "Unit": "Percent",
                }
                for i, v in enumerate(values)
            ],
        )


def report_for(name: str, tmp_path, capsys) -> dict:
    assert cli(["cost-report", str(tmp_path / name), "--sagemaker-job", name, "--region", "us-east-1"]) == 0
    assert "Recommended:" in capsys.readouterr().out
    return json.loads((tmp_path / name / "cost_report.json").read_text())


@pytest.fixture
def cloudwatch(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    return aws


def test_an_oversized_cpu_job_gets_a_smaller_instance(cloudwatch, tmp_path, capsys):
    # the seeds' finding: 20% CPU, 21% memory, 2% disk at most on a 16-vCPU, 64 GiB instance
    sagemaker_job(
        "oversized",
        "ml.m5.4xlarge",
        {
            "CPUUtilization": [280.0, 320.0, 300.0, 310.0, 290.0],  # sums over 16 cores: about 3 busy cores
            "MemoryUtilization": [19.0, 21.0, 20.0, 20.5, 20.0],
            "DiskUtilization": [1.5, 2.0, 2.0, 2.0, 2.0],
        },
    )
    r = report_for("oversized", tmp_path, capsys)
    u = r["utilization"]
    assert u["cpu_percent"]["peak"] == pytest.approx(20.0) and u["mem_percent"]["peak"] == pytest.approx(21.0)
    assert u["disk_percent"]["peak"] == pytest.approx(2.0)
    assert r["machine"]["instance_type"] == "ml.m5.4xlarge" and r["current"]["instance"] == "ml.m5.4xlarge"
    need = r["needs"]
    assert not need["uses_gpu"] and not need["contended"]  # a training instance runs nothing else
    assert need["mem_used_gb"] == pytest.approx(0.21 * 64, abs=0.01)  # 21% of the instance's 64 GiB
    assert need["vcpus"] == 5  # p95 of about 3.1 busy cores, times 1.3 headroom, rounded up
    # 5 vCPU and 17.5 GiB: ml.c5.2xlarge (16 GiB) is short of memory, ml.m5.2xlarge fits at half the price
    assert r["recommended"]["instance"] == "ml.m5.2xlarge"
    assert r["saving_per_run_usd"] == pytest.approx(r["current"]["usd_per_run"] / 2, rel=0.01)
    md = (tmp_path / "oversized" / "cost_report.md").read_text()
    assert "CloudWatch" in md and "ml.m5.2xlarge" in md
    assert (tmp_path / "oversized" / "utilization.png").read_bytes()[:4] == b"\x89PNG"


def test_a_gpu_job_keeps_a_gpu_but_a_cheaper_one(cloudwatch, tmp_path, capsys):
    sagemaker_job(
        "gpu-busy",
        "ml.p3.2xlarge",
        {
            "CPUUtilization": [240.0] * 5,
            "MemoryUtilization": [10.0] * 5,
            "DiskUtilization": [3.0] * 5,
            "GPUUtilization": [80.0, 85.0, 90.0, 85.0, 85.0],
            "GPUMemoryUtilization": [40.0] * 5,
        },
    )
    r = report_for("gpu-busy", tmp_path, capsys)
    need = r["needs"]
    assert need["uses_gpu"] and need["gpu_mem_used_gb"] == pytest.approx(0.40 * 16, abs=0.01)
    assert r["utilization"]["gpu_percent"]["peak"] == pytest.approx(90.0)
    rec = r["recommended"]
    assert rec["instance"] == "ml.g4dn.xlarge" and rec["gpu_mem_gb"] >= need["gpu_mem_gb"]
    assert all(not c["fits"] for c in r["instances"] if c["gpus"] == 0)


def test_a_run_without_utilization_is_a_clear_error(tmp_path, capsys):
    assert cli(["cost-report", str(tmp_path)]) == 2
    assert "no utilization.csv" in capsys.readouterr().err


def test_an_unknown_sagemaker_job_is_a_clear_error(cloudwatch, tmp_path, capsys):
    assert cli(["cost-report", str(tmp_path), "--sagemaker-job", "no-such-job", "--region", "us-east-1"]) == 2
    assert "cannot describe the training job" in capsys.readouterr().err


def test_price_table_says_where_its_prices_come_from():
    table = load_prices()
    assert table["source"].startswith("https://aws.amazon.com/sagemaker/pricing/") and table["collected"]
    assert table["region"] == "us-east-1" and table["currency"] == "USD"
    wanted = {
        "ml.c5.xlarge",
        "ml.m5.large",
        "ml.m5.xlarge",
        "ml.c5.2xlarge",
        "ml.g4dn.xlarge",
        "ml.g5.xlarge",
        "ml.p3.2xlarge",
    }
    assert wanted <= set(table["instances"])
    for name, spec in table["instances"].items():
        assert spec["usd_per_hour"] > 0 and spec["checked"] in {"agreed", "disputed"}, name
        assert (spec["gpus"] > 0) == (spec["gpu_mem_gb"] > 0), name
