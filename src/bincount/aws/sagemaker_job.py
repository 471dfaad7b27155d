"""The one SageMaker job builder: who and where (region, credentials, account, bucket, role), the S3
layout of everything bincount writes there, the source tarball a training job runs, and the dry run
that builds and validates a request without sending it.

bincount uses the SageMaker Python SDK v2 on purpose: v3 has no framework estimators, no debugger or
profiler arguments and no HyperparameterTuner built on them. The v2 SDK announces its deprecation, its
config-file search and its telemetry on every use; those notices are silenced here (``quiet_sdk``), and
telemetry is opted out unless ``sdk_telemetry`` is set. Warnings and errors of the SDK still show.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Callable
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from bincount.errors import BincountError

log = logging.getLogger(__name__)

PLACEHOLDER_ACCOUNT = "000000000000"
# the S3 layout under s3://BUCKET/PREFIX/ (PREFIX: the `prefix` setting, bincount by default)
CODE, OUTPUT, CHECKPOINTS, DATA, MODELS = "code", "output", "checkpoints", "data/abid", "models"
# what a training job runs: this entry point at the root of its source dir, with the package beside it
ENTRY_POINT = "sagemaker_train.py"
ENTRY_SOURCE = (
    '"""Entry point of a bincount SageMaker training job (written by bincount.aws.sagemaker_job)."""\n'
    "from bincount.launch.sagemaker_entry import main\n\nmain()\n"
)
REQUIREMENTS = "sagemaker_requirements.txt"  # beside bincount.launch.sagemaker_entry


def quiet_sdk() -> None:
    """Silence the SDK v2's deprecation notices and its INFO chatter (config search, telemetry notice,
    image lookups); call before importing ``sagemaker``."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    for name in ("sagemaker", "sagemaker.config"):  # a level set here is kept by the SDK
        logging.getLogger(name).setLevel(logging.WARNING)


quiet_sdk()  # every SageMaker command (launcher, tuner, deploy) imports this module before the SDK


def import_sdk():
    """The ``sagemaker`` module (v2), quietly; one sentence when it is missing or v3."""
    quiet_sdk()
    try:
        import sagemaker
        from sagemaker.pytorch import PyTorch  # noqa: F401  (gone in SDK v3)
    except ImportError:
        raise BincountError(
            "SageMaker commands need the SageMaker Python SDK v2 (v3 has no estimators): "
            "pip install 'bincount[sagemaker]'"
        ) from None
    return sagemaker


class SageMakerSession:
    """Who and where a SageMaker request goes: region (given, else AWS_REGION, else the AWS config's, else
    us-east-1), credentials, account, bucket, execution role, and the S3 layout under ``s3://BUCKET/PREFIX/``.
    ``dry_run`` needs no credentials: the account, the default bucket and the role become placeholders.
    ``keys`` and ``dry_run_key`` say where these settings live in the config, for error messages."""

    def __init__(
        self,
        region: str | None = None,
        role: str | None = None,
        bucket: str | None = None,
        prefix: str = "bincount",
        dry_run: bool = False,
        sdk_telemetry: bool = False,
        keys: str = "",
        dry_run_key: str = "dry_run",
    ):
        import boto3

        region = region or os.environ.get("AWS_REGION") or boto3.Session().region_name or "us-east-1"
        self.boto = boto3.Session(region_name=region)
        self.region = self.boto.region_name
        self.role, self.bucket, self.prefix = role, bucket, prefix.strip("/")
        self.dry_run, self.sdk_telemetry, self.keys = dry_run, sdk_telemetry, keys
        self.has_credentials = self.boto.get_credentials() is not None
        if not self.has_credentials and not dry_run:
            raise BincountError(
                "no AWS credentials found; run `aws configure` (or set AWS_PROFILE), or preview "
                f"the requests with {dry_run_key}=true"
            )

    def client(self, service: str):
        """A boto3 client; endpoints follow the AWS config (e.g. AWS_ENDPOINT_URL)."""
        return self.boto.client(service)

    @cached_property
    def sdk(self):
        """The SDK's session on this boto session, with the user's SDK defaults files and this session's
        telemetry choice."""
        sagemaker = import_sdk()
        from sagemaker.config import load_sagemaker_config

        sdk_config = load_sagemaker_config()
        if not self.sdk_telemetry:
            sdk_config.setdefault("SchemaVersion", "1.0")
            sdk_config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})[
                "TelemetryOptOut"
            ] = True
        return sagemaker.Session(boto_session=self.boto, default_bucket=self.bucket_name, sagemaker_config=sdk_config)

    @cached_property
    def account(self) -> str:
        if not self.has_credentials:
            return PLACEHOLDER_ACCOUNT
        try:
            return self.client("sts").get_caller_identity()["Account"]
        except Exception as e:  # expired or wrong credentials
            if self.dry_run:
                return PLACEHOLDER_ACCOUNT
            raise BincountError(
                f"AWS rejected the credentials ({e}); refresh them (`aws sso login`, `aws configure`)"
            ) from None

    @cached_property
    def bucket_name(self) -> str:
        """The configured bucket, else the SDK's default name ``sagemaker-REGION-ACCOUNT``; created if missing
        (in a dry run only named). Done here rather than by the SDK, whose STS client ignores
        AWS_ENDPOINT_URL."""
        name = self.bucket or f"sagemaker-{self.region}-{self.account}"
        if self.dry_run:
            return name
        from botocore.exceptions import ClientError

        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=name)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise BincountError(
                    f"bucket {name}: {e.response.get('Error', {}).get('Code')} (it may belong to "
                    f"another account); set {self.keys}bucket=NAME"
                ) from None
            where = (
                {} if self.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
            )
            s3.create_bucket(Bucket=name, **where)
            log.info("created bucket %s", name)
        return name

    @cached_property
    def role_arn(self) -> str:
        if self.role:
            return self.role
        if not self.dry_run:
            try:  # inside SageMaker Studio or a notebook instance the role is known
                import_sdk()
                from sagemaker import get_execution_role

                return get_execution_role()
            except Exception:
                raise BincountError(
                    f"{self.keys}role: set {self.keys}role=arn:aws:iam::ACCOUNT:role/NAME (or "
                    "SAGEMAKER_ROLE), a role SageMaker can assume; see README 'Training on "
                    "SageMaker'"
                ) from None
        return f"arn:aws:iam::{self.account}:role/SageMakerExecutionRole"

    # -- the S3 layout ----------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket_name}/{self.key(*parts)}"

    def upload(self, local: str | Path, key: str) -> str:
        """Put a local file at ``key`` of the bucket (nothing in a dry run); returns its s3:// URI."""
        if not self.dry_run:
            self.client("s3").upload_file(str(local), self.bucket_name, key)
        return f"s3://{self.bucket_name}/{key}"

    def console(self, kind: str, name: str) -> str:
        return f"https://{self.region}.console.aws.amazon.com/sagemaker/home?region={self.region}#/{kind}/{name}"

    # -- dry runs ---------------------------------------------------------------------------
    @staticmethod
    def capture(client, operation: str, answer: dict, submit: Callable[[], Any]) -> dict:
        """Run ``submit`` (a real submission through the SDK or boto3 on the SageMaker ``client``) up to the
        wire: botocore builds the ``operation`` request and validates it against the API model, then this answers ``answer`` in
        place of AWS, so nothing is sent and no credentials are needed. Returns the request as it would
        be sent."""
        from botocore.awsrequest import AWSResponse

        captured: dict = {}

        def handler(params, **_):
            captured.update(json.loads(params["body"]))
            return AWSResponse(params["url"], 200, {}, None), answer

        events = client.meta.events
        event = f"before-call.sagemaker.{operation}"
        events.register_first(event, handler)
        try:
            submit()
        finally:
            events.unregister(event, handler)
        return captured

    def placeholders(self) -> str | None:
        """What a dry run's request holds in place of real values, or None."""
        if not self.has_credentials:
            return (
                f"no AWS credentials, so account {PLACEHOLDER_ACCOUNT}, the default bucket and the role are "
                "placeholders"
            )
        if not self.role:
            return f"the role is a placeholder (set {self.keys}role)"
        return None

    def write_dry_run(self, request: dict, path: Path, what: str) -> None:
        """Print a dry run's request, keep it in ``path`` and say what it did not do."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(request, indent=2, default=str))
        print(json.dumps(request, indent=2, default=str))
        note = self.placeholders()
        print(f"dry run: {note + '; ' if note else ''}nothing was uploaded or submitted")
        log.info("dry run: %s request written to %s", what, path)


# -- the source a training job runs ---------------------------------------------------------------
def pack_source(dest: Path) -> Path:
    """A training job's source dir as ``sourcedir.tar.gz``: the entry point, the bincount package with
    its configs (``bincount/conf``) and the container's ``requirements.txt`` (SageMaker pip-installs it
    before running the entry point). Built from the installed package, so a wheel install launches too."""
    package = resources.files("bincount")
    conf = resources.files("bincount.conf")

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name
        if (
            "__pycache__" in name
            or name.endswith(".pyc")
            or name == "bincount/conf"
            or name.startswith("bincount/conf/")
        ):
            return None  # the configs come from bincount.conf (the checkout's conf/), added below
        return info

    dest.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(package) as pkg, resources.as_file(conf) as cfg, tarfile.open(dest, "w:gz") as tar:
        tar.add(pkg, arcname="bincount", filter=skip)
        tar.add(
            cfg,
            arcname="bincount/conf",
            filter=lambda i: None if "__pycache__" in i.name or i.name.endswith(".pyc") else i,
        )
        tar.add(Path(pkg) / "launch" / REQUIREMENTS, arcname="requirements.txt")
        data = ENTRY_SOURCE.encode()
        info = tarfile.TarInfo(ENTRY_POINT)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return dest
