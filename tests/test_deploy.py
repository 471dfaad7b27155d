"""`bincount deploy` and `bincount delete-endpoint` against the loopback AWS server: the dry run prints
the requests and creates nothing; a real run uploads the artifact and creates model, endpoint config and
endpoint (real-time or serverless) exactly as printed; delete removes all three."""

import json
import tarfile

import boto3
import pytest

from bincount.cli import main
from bincount.errors import BincountError
from bincount.serve.deploy import compose, delete_endpoint, deploy
from bincount.serve.export import export_model

pytest.importorskip("sagemaker", reason="the sagemaker extra is not installed")

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def exported(counter_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    export_model(counter_ckpt, out, sagemaker=True)
    return out


@pytest.fixture
def sm(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    return boto3.client("sagemaker", region_name="us-east-1")


def test_dry_run_prints_the_requests_and_creates_nothing(exported, sm, capsys):
    assert main(["deploy", f"artifact={exported}", f"role={ROLE}", "dry_run=true", "name=bins"]) == 0
    printed = capsys.readouterr()
    plan = json.loads(printed.out)
    assert set(plan) == {"S3Upload", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"}
    container = plan["CreateModel"]["PrimaryContainer"]
    assert container["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["ModelDataUrl"] == f"s3://{plan['S3Upload']['Bucket']}/{plan['S3Upload']['Key']}"
    (variant,) = plan["CreateEndpointConfig"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 1
    assert variant["ModelName"] == plan["CreateModel"]["ModelName"]
    assert plan["CreateEndpoint"] == {
        "EndpointName": "bins",
        "EndpointConfigName": plan["CreateEndpointConfig"]["EndpointConfigName"],
    }
    assert "dry run" in printed.err
    assert sm.list_models()["Models"] == [] and sm.list_endpoints()["Endpoints"] == []


def test_serverless_and_gpu_variants_are_config(exported, sm):
    plan = deploy(
        compose(
            [
                "endpoint=serverless",
                "endpoint.serverless_inference_config.MemorySizeInMB=6144",
                "dry_run=true",
                "artifact=s3://models/bincount/model.tar.gz",
            ]
        )
    )
    (variant,) = plan["CreateEndpointConfig"]["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 6144, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "S3Upload" not in plan
    assert plan["CreateModel"]["PrimaryContainer"]["ModelDataUrl"] == "s3://models/bincount/model.tar.gz"
    gpu = deploy(compose([f"artifact={exported}", "endpoint.instance_type=ml.g4dn.xlarge", "dry_run=true"]))
    assert "-gpu-" in gpu["CreateModel"]["PrimaryContainer"]["Image"]


def test_deploy_creates_what_the_dry_run_printed_and_delete_removes_it(exported, sm, tmp_path):
    cfg = compose(
        [
            f"artifact={exported}",
            f"role={ROLE}",
            "name=bins",
            "bucket=ml-artifacts",
            "backend=torch",
            "+tags.team=inventory",
        ]
    )
    plan = deploy(cfg)
    assert plan["EndpointStatus"] == "InService"
    endpoint = sm.describe_endpoint(EndpointName="bins")
    assert endpoint["EndpointConfigName"] == plan["CreateEndpointConfig"]["EndpointConfigName"]
    model = sm.describe_model(ModelName=plan["CreateModel"]["ModelName"])
    assert model["PrimaryContainer"]["Environment"]["BINCOUNT_BACKEND"] == "torch"
    assert model["ExecutionRoleArn"] == ROLE
    # the uploaded artifact is the exported tarball, byte for byte
    key = plan["S3Upload"]["Key"]
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket="ml-artifacts", Key=key)["Body"].read()
    assert body == (exported / "model.tar.gz").read_bytes()
    (tmp_path / "got.tar.gz").write_bytes(body)
    with tarfile.open(tmp_path / "got.tar.gz") as tar:
        assert "code/inference.py" in tar.getnames()

    with pytest.raises(BincountError, match="already exists"):
        deploy(cfg)
    assert sm.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"] == [{"Key": "team", "Value": "inventory"}]
    gone = delete_endpoint("bins", "us-east-1")
    assert gone[0] == "endpoint bins" and len(gone) == 3
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_a_checkpoint_deploys_serverless_into_the_default_bucket(counter_ckpt, sm, capsys):
    assert main(["deploy", f"artifact={counter_ckpt}", f"role={ROLE}", "endpoint=serverless", "name=bins-sl"]) == 0
    assert json.loads(capsys.readouterr().out)["EndpointStatus"] == "InService"
    (variant,) = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="bins-sl")["EndpointConfigName"]
    )["ProductionVariants"]
    assert variant["ServerlessConfig"]["MemorySizeInMB"] == 4096
    buckets = [b["Name"] for b in boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"]]
    assert buckets == ["sagemaker-us-east-1-123456789012"]
    assert main(["delete-endpoint", "bins-sl", "--keep-model"]) == 0
    assert len(sm.list_models()["Models"]) == 1


def test_user_mistakes_are_one_clear_error(exported, sm, monkeypatch, capsys):
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    assert main(["deploy", f"artifact={exported}"]) == 2
    assert "role" in capsys.readouterr().err
    assert main(["deploy", "artifact=/no/such/model", "dry_run=true"]) == 2
    assert "artifact=/no/such/model" in capsys.readouterr().err
    assert main(["delete-endpoint", "never-made"]) == 2
    assert "no endpoint never-made" in capsys.readouterr().err
