"""Deploy an exported model to a SageMaker endpoint (real-time or serverless), and delete one.

``bincount deploy`` composes ``conf/deploy.yaml`` with Hydra overrides. The production variant is
config (``endpoint=realtime|serverless``, built by the SageMaker SDK's ``production_variant``), the
container image is the AWS PyTorch inference image the SDK names for this region, and the model
artifact is ``model.tar.gz`` from ``bincount export --sagemaker`` (safetensors + JSON + ``code/``
with bincount's handler). The three requests are built here and sent with boto3, so ``dry_run=true``
prints exactly what a real run sends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError
from bincount.serve.export import ENTRY_POINT, TAR_NAME, export_model, write_model_tar

log = logging.getLogger(__name__)

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # else the SDK prints its config search to stdout


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    import bincount.config  # noqa: F401  (resolvers)
    from bincount.paths import PROJECT_ROOT

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return hydra_compose("deploy", overrides=overrides)


def model_tarball(model: str, workdir: Path) -> str:
    """An s3:// URI or a local model.tar.gz for ``model``: a checkpoint is exported first, a folder packed."""
    if model.startswith("s3://"):
        return model
    path = Path(model)
    if path.is_file() and path.name.endswith(".tar.gz"):
        return str(path)
    if path.is_file() and path.suffix == ".ckpt":
        return export_model(path, workdir, sagemaker=True)["tarball"]
    if path.is_dir():
        return str(path / TAR_NAME) if (path / TAR_NAME).is_file() else str(write_model_tar(path, workdir / TAR_NAME))
    raise BincountError(f"artifact={model}: not a checkpoint, an export folder, a model.tar.gz or an s3:// URI")


def build_requests(cfg: DictConfig, model_data: str, stamp: str) -> dict[str, dict]:
    """The CreateModel, CreateEndpointConfig and CreateEndpoint requests of a deployment."""
    from hydra.utils import instantiate
    from sagemaker import image_uris
    from sagemaker.serverless import ServerlessInferenceConfig

    model_name = config_name = f"{cfg.name}-{stamp}"
    variant = instantiate(cfg.endpoint, model_name=model_name, _convert_="all")
    serverless = "ServerlessConfig" in variant
    image = image_uris.retrieve("pytorch", cfg.region, version=str(cfg.framework_version), py_version=cfg.py_version,
                                instance_type=variant.get("InstanceType"), image_scope="inference",
                                serverless_inference_config=ServerlessInferenceConfig() if serverless else None)
    tags = [{"Key": str(k), "Value": str(v)} for k, v in (cfg.tags or {}).items()]
    return {
        "CreateModel": {
            "ModelName": model_name,
            "ExecutionRoleArn": cfg.role or "<role: set role=ARN or SAGEMAKER_ROLE>",
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": model_data,
                "Environment": {
                    # the PyTorch container imports code/inference.py from the model artifact
                    "SAGEMAKER_PROGRAM": ENTRY_POINT,
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                    "SAGEMAKER_REGION": cfg.region,
                    "BINCOUNT_BACKEND": cfg.backend,
                },
            },
            **({"Tags": tags} if tags else {}),
        },
        "CreateEndpointConfig": {"EndpointConfigName": config_name, "ProductionVariants": [variant],
                                 **({"Tags": tags} if tags else {})},
        "CreateEndpoint": {"EndpointName": cfg.name, "EndpointConfigName": config_name,
                           **({"Tags": tags} if tags else {})},
    }


def _client(service: str, region: str):
    import boto3

    return boto3.client(service, region_name=region)  # AWS_ENDPOINT_URL(_<SERVICE>) points it elsewhere


def _default_bucket(region: str) -> str:
    account = _client("sts", region).get_caller_identity()["Account"]
    return f"sagemaker-{region}-{account}"


def _upload(local: str, bucket: str, key: str, region: str) -> str:
    s3 = _client("s3", region)
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket, **({} if region == "us-east-1" else
                                           {"CreateBucketConfiguration": {"LocationConstraint": region}}))
    s3.upload_file(local, bucket, key)
    return f"s3://{bucket}/{key}"


def _endpoint_exists(sm, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
        return True
    except sm.exceptions.ClientError:
        return False


def deploy(cfg: DictConfig) -> dict:
    """Upload the model artifact if it is local, then create model, endpoint config and endpoint.
    Returns the requests (and, unless ``dry_run``, the endpoint's status)."""
    if cfg.backend not in ("torch", "onnx"):
        raise BincountError(f"backend={cfg.backend}: choose torch or onnx")
    sm = None
    if not cfg.dry_run:  # refuse before uploading anything
        if not cfg.role:
            raise BincountError("role: the endpoint needs an execution role; pass role=arn:aws:iam::ACCOUNT:role/NAME "
                                "or set SAGEMAKER_ROLE")
        sm = _client("sagemaker", cfg.region)
        if _endpoint_exists(sm, cfg.name):
            raise BincountError(f"endpoint {cfg.name} already exists; pick another name=... or run "
                                f"`bincount delete-endpoint {cfg.name}` first")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bincount-deploy-") as tmp:
        model_data = model_tarball(str(cfg.artifact), Path(tmp))
        plan: dict = {}
        if not model_data.startswith("s3://"):
            bucket = cfg.bucket or ("<sagemaker-REGION-ACCOUNT>" if cfg.dry_run else _default_bucket(cfg.region))
            key = f"{cfg.prefix.strip('/')}/{cfg.name}-{stamp}/{TAR_NAME}"
            plan["S3Upload"] = {"File": model_data, "Bucket": bucket, "Key": key}
            model_data = f"s3://{bucket}/{key}" if cfg.dry_run else _upload(model_data, bucket, key, cfg.region)
        plan.update(build_requests(cfg, model_data, stamp))
    if sm is None:
        return plan
    sm.create_model(**plan["CreateModel"])
    sm.create_endpoint_config(**plan["CreateEndpointConfig"])
    sm.create_endpoint(**plan["CreateEndpoint"])
    if cfg.wait:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=cfg.name)
    plan["EndpointStatus"] = sm.describe_endpoint(EndpointName=cfg.name)["EndpointStatus"]
    return plan


def delete_endpoint(name: str, region: str, keep_model: bool = False, dry_run: bool = False) -> list[str]:
    """Delete an endpoint, its endpoint config and (unless ``keep_model``) its models; returns what went."""
    sm = _client("sagemaker", region)
    try:
        config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except sm.exceptions.ClientError:
        raise BincountError(f"no endpoint {name} in {region}; list them with `aws sagemaker list-endpoints`") from None
    variants = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    steps = [("endpoint", lambda: sm.delete_endpoint(EndpointName=name), name),
             ("endpoint config", lambda: sm.delete_endpoint_config(EndpointConfigName=config_name), config_name)]
    if not keep_model:
        steps += [("model", lambda m=v["ModelName"]: sm.delete_model(ModelName=m), v["ModelName"]) for v in variants]
    done = []
    for kind, call, what in steps:
        if not dry_run:
            call()
        done.append(f"{kind} {what}")
    return done


def _deploy(args: argparse.Namespace) -> int:
    cfg = compose(args.overrides)
    plan = deploy(cfg)
    print(json.dumps(plan, indent=2, default=str), flush=True)
    if cfg.dry_run:
        print("dry run: nothing was uploaded or created", file=sys.stderr)
    else:
        print(f"endpoint {cfg.name}: {plan['EndpointStatus']}; invoke it with content type image/jpeg, "
              f"delete it with `bincount delete-endpoint {cfg.name}`", file=sys.stderr)
    log.debug("deploy config:\n%s", OmegaConf.to_yaml(cfg))
    return 0


def _delete(args: argparse.Namespace) -> int:
    gone = delete_endpoint(args.name, args.region, args.keep_model, args.dry_run)
    print(("would delete: " if args.dry_run else "deleted: ") + ", ".join(gone))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="create a SageMaker endpoint (real-time or serverless) for a model; "
                                      "KEY=VALUE overrides of conf/deploy.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. artifact=RUN/checkpoints/best.ckpt endpoint=serverless dry_run=true")
    p.set_defaults(func=_deploy)
    d = sub.add_parser("delete-endpoint", help="delete a SageMaker endpoint, its endpoint config and its models")
    d.add_argument("name")
    d.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    d.add_argument("--keep-model", action="store_true", help="delete only the endpoint and its config")
    d.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    d.set_defaults(func=_delete)
