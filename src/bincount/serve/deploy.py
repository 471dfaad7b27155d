"""Deploy an exported model to a SageMaker endpoint (real-time or serverless), and delete one.

``bincount deploy`` composes ``conf/deploy.yaml`` with Hydra overrides. The production variant is
config (``endpoint=realtime|serverless``, built by the SageMaker SDK's ``production_variant``), the
container image is the AWS PyTorch inference image the SDK names for this region, and the model
artifact is ``model.tar.gz`` from ``bincount export --sagemaker`` (safetensors + JSON + ``code/``
with bincount's handler). The three requests are built here and sent with boto3; ``dry_run=true``
builds and validates the very same requests (bincount.aws.sagemaker_job) and sends nothing.

The endpoint serves one request at a time per worker: TorchServe's batching (SAGEMAKER_TS_BATCH_SIZE) is
left at 1, because the SageMaker inference toolkit would still run each grouped request through
input_fn/predict_fn on its own (and read only the first request's content type). Images sent together in
one JSON request (``{"images": [...]}``) do share a forward pass.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from bincount.aws.sagemaker_job import MODELS, SageMakerSession, import_sdk
from bincount.config import compose as compose_config
from bincount.errors import BincountError
from bincount.serve.export import ENTRY_POINT, TAR_NAME, export_model, write_model_tar

log = logging.getLogger(__name__)

# the requests of a deployment, in order, and the boto3 method that sends each
OPERATIONS = {
    "CreateModel": "create_model",
    "CreateEndpointConfig": "create_endpoint_config",
    "CreateEndpoint": "create_endpoint",
}


def compose(overrides: list[str]) -> DictConfig:
    """conf/deploy.yaml with these ``key=value`` overrides."""
    return compose_config("deploy", overrides)


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


def build_requests(cfg: DictConfig, model_data: str, stamp: str, role: str, region: str) -> dict[str, dict]:
    """The CreateModel, CreateEndpointConfig and CreateEndpoint requests of a deployment."""
    from hydra.utils import instantiate

    import_sdk()
    from sagemaker import image_uris
    from sagemaker.serverless import ServerlessInferenceConfig

    model_name = config_name = f"{cfg.name}-{stamp}"
    variant = instantiate(cfg.endpoint, model_name=model_name, _convert_="all")
    serverless = "ServerlessConfig" in variant
    image = image_uris.retrieve(
        "pytorch",
        region,
        version=str(cfg.framework_version),
        py_version=cfg.py_version,
        instance_type=variant.get("InstanceType"),
        image_scope="inference",
        serverless_inference_config=ServerlessInferenceConfig() if serverless else None,
    )
    tags = [{"Key": str(k), "Value": str(v)} for k, v in (cfg.tags or {}).items()]
    return {
        "CreateModel": {
            "ModelName": model_name,
            "ExecutionRoleArn": role,
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": model_data,
                "Environment": {
                    # the PyTorch container imports code/inference.py from the model artifact
                    "SAGEMAKER_PROGRAM": ENTRY_POINT,
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                    "SAGEMAKER_REGION": region,
                    "BINCOUNT_BACKEND": cfg.backend,
                },
            },
            **({"Tags": tags} if tags else {}),
        },
        "CreateEndpointConfig": {
            "EndpointConfigName": config_name,
            "ProductionVariants": [variant],
            **({"Tags": tags} if tags else {}),
        },
        "CreateEndpoint": {
            "EndpointName": cfg.name,
            "EndpointConfigName": config_name,
            **({"Tags": tags} if tags else {}),
        },
    }


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
    session = SageMakerSession(cfg.region, cfg.role, cfg.bucket, cfg.prefix, cfg.dry_run)
    role = session.role_arn  # refuse before uploading anything
    client = session.client("sagemaker")
    if not cfg.dry_run and _endpoint_exists(client, cfg.name):
        raise BincountError(
            f"endpoint {cfg.name} already exists; pick another name=... or run "
            f"`bincount delete-endpoint {cfg.name}` first"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bincount-deploy-") as tmp:
        model_data = model_tarball(str(cfg.artifact), Path(tmp))
        plan: dict = {}
        if not model_data.startswith("s3://"):
            key = session.key(MODELS, f"{cfg.name}-{stamp}", TAR_NAME)
            plan["S3Upload"] = {"File": model_data, "Bucket": session.bucket_name, "Key": key}
            model_data = session.upload(model_data, key)
        plan.update(build_requests(cfg, model_data, stamp, role, session.region))
    if cfg.dry_run:  # the same calls, built and validated by botocore, answered here instead of by AWS
        for operation, method in OPERATIONS.items():
            send = getattr(client, method)
            plan[operation] = session.capture(client, operation, {}, lambda s=send, r=plan[operation]: s(**r))
        if session.placeholders():
            log.info("dry run: %s", session.placeholders())
        return plan
    for operation, method in OPERATIONS.items():
        getattr(client, method)(**plan[operation])
    if cfg.wait:
        client.get_waiter("endpoint_in_service").wait(EndpointName=cfg.name)
    plan["EndpointStatus"] = client.describe_endpoint(EndpointName=cfg.name)["EndpointStatus"]
    return plan


def delete_endpoint(name: str, region: str | None = None, keep_model: bool = False, dry_run: bool = False) -> list[str]:
    """Delete an endpoint, its endpoint config and (unless ``keep_model``) its models; returns what went."""
    session = SageMakerSession(region=region, dry_run=dry_run)
    sm = session.client("sagemaker")
    try:
        config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except sm.exceptions.ClientError:
        raise BincountError(
            f"no endpoint {name} in {session.region}; list them with `aws sagemaker list-endpoints`"
        ) from None
    variants = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    steps = [
        ("endpoint", lambda: sm.delete_endpoint(EndpointName=name), name),
        ("endpoint config", lambda: sm.delete_endpoint_config(EndpointConfigName=config_name), config_name),
    ]
    if not keep_model:
        steps += [("model", lambda m=v["ModelName"]: sm.delete_model(ModelName=m), v["ModelName"]) for v in variants]
    done = []
    for kind, call, what in steps:
        if not dry_run:
            call()
        done.append(f"{kind} {what}")
    return done
