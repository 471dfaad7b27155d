"""The SageMaker launcher: ship this project and the command line's Hydra overrides to a SageMaker
PyTorch training job, with SageMaker's profiler and debugger attached, follow it, fetch its outputs.

The job runs ``sagemaker_train.py`` (bincount.launch.sagemaker_entry), which turns the overrides back
into the identical Hydra config and calls the same ``train(cfg)`` as a local run. Needs the v2 SDK
(``pip install 'bincount[sagemaker]'``): v3 dropped the Estimator classes and the debugger arguments.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

ENTRY_POINT = "sagemaker_train.py"
REQUIREMENTS = Path(__file__).with_name("sagemaker_requirements.txt")
# What the job's source dir holds: the entry points, the configs and the package (never data, .venv).
SOURCE_FILES = ("train.py", ENTRY_POINT)
SOURCE_DIRS = ("conf", "src/bincount")
# Overrides that describe this machine, not the training: the container sets its own.
LOCAL_ONLY = ("launcher", "hydra", "data.root", "paths.", "trainer.num_nodes", "trainer.devices",
              "trainer.strategy", "ckpt_path")
PLACEHOLDER_ACCOUNT = "000000000000"
REQUEST_NAME = "sagemaker_request.json"
JOB_NAME = "sagemaker_job.json"


def job_hyperparameters(overrides: list[str]) -> dict[str, str]:
    """Hydra overrides -> SageMaker hyperparameters (``experiment=resnet50`` -> ``{"experiment": "resnet50"}``).

    The container hands them to the entry script as ``--experiment resnet50``, where
    ``sagemaker_entry.overrides_from_args`` turns them back. Values stay strings, so they survive the
    SDK's JSON encoding unchanged. Overrides about this machine (paths, launcher, Hydra) stay here.
    """
    hyperparameters: dict[str, str] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        name = key.lstrip("+~").split("@")[0].replace("/", ".")
        if any(name == p or name.startswith(p if p.endswith(".") else p + ".") for p in LOCAL_ONLY):
            continue
        if not sep and not key.startswith("~"):
            raise BincountError(f"override {override!r} has no '=': write key=value")
        hyperparameters[key] = value
    return hyperparameters


def pack_source(dest: Path, root: Path = PROJECT_ROOT) -> Path:
    """The job's source dir as ``sourcedir.tar.gz``: entry points, conf/, src/bincount and the
    container's requirements.txt (SageMaker pip-installs it before running the entry point)."""
    def skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for name in SOURCE_FILES + SOURCE_DIRS:
            if not (root / name).exists():
                raise BincountError(f"launcher=sagemaker: {root / name} is missing; run from a bincount checkout")
            tar.add(root / name, arcname=name, filter=skip_caches)
        tar.add(REQUIREMENTS, arcname="requirements.txt")
    return dest


def _tags(tags: dict | None) -> list[dict[str, str]]:
    return [{"Key": str(k), "Value": str(v)} for k, v in (tags or {}).items()]


class SageMakerLauncher:
    """Builds a ``sagemaker.pytorch.PyTorch`` estimator from ``conf/launcher/sagemaker.yaml``."""

    def __init__(self, dry_run: bool = False, wait: bool = True, logs: str = "All", download: bool = True,
                 region: str | None = None, role: str | None = None, bucket: str | None = None,
                 prefix: str = "bincount", base_job_name: str = "bincount", job_name: str | None = None,
                 instance_count: int = 2, instance_type: str = "ml.c5.xlarge", volume_size: int = 30,
                 framework_version: str = "2.5.1", py_version: str = "py311",
                 inputs: dict[str, str | None] | None = None, output_path: str | None = None,
                 checkpoint_s3_uri: str | None = None, spot: bool = True, max_run: int = 86400,
                 max_wait: int | None = None, tags: dict | None = None, environment: dict | None = None,
                 profiler: dict | None = None, debugger: dict | None = None, sdk_telemetry: bool = False):
        self.dry_run, self.wait, self.logs, self.download = dry_run, wait, logs, download
        self.region, self.role, self.bucket, self.prefix = region, role, bucket, prefix.strip("/")
        self.base_job_name, self.job_name = base_job_name, job_name
        self.instance_count, self.instance_type, self.volume_size = instance_count, instance_type, volume_size
        self.framework_version, self.py_version = framework_version, py_version
        self.inputs, self.output_path, self.checkpoint_s3_uri = dict(inputs or {}), output_path, checkpoint_s3_uri
        self.spot, self.max_run, self.max_wait = spot, max_run, max_wait
        self.tags, self.environment = dict(tags or {}), dict(environment or {})
        self.profiler, self.debugger = dict(profiler or {}), dict(debugger or {})
        self.sdk_telemetry = sdk_telemetry

    # -- AWS session ------------------------------------------------------------------------
    def _sessions(self):
        """The boto3 session (region from the config, else the AWS config, else us-east-1) and the
        SageMaker session on top of it. Endpoints follow the AWS config (e.g. AWS_ENDPOINT_URL)."""
        import boto3
        try:
            import sagemaker
            from sagemaker.config import load_sagemaker_config
            from sagemaker.pytorch import PyTorch  # noqa: F401  (gone in SDK v3)
        except ImportError:
            raise BincountError("launcher=sagemaker needs the SageMaker Python SDK v2 (v3 has no estimators): "
                                "pip install -e '.[sagemaker]'") from None

        boto = boto3.Session(region_name=self.region or boto3.Session().region_name or "us-east-1")
        credentials = boto.get_credentials()
        if credentials is None and not self.dry_run:
            raise BincountError("launcher=sagemaker: no AWS credentials found; run `aws configure` (or set "
                                "AWS_PROFILE), or preview the job with launcher.dry_run=true")
        # the user's SDK defaults files, as the SDK reads them, plus this launcher's telemetry choice
        sdk_config = load_sagemaker_config()
        if not self.sdk_telemetry:
            sdk_config.setdefault("SchemaVersion", "1.0")
            sdk_config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})[
                "TelemetryOptOut"] = True
        session = sagemaker.Session(boto_session=boto, default_bucket=self.bucket, sagemaker_config=sdk_config)
        return boto, session, credentials is not None

    def _account(self, boto, has_credentials: bool) -> str:
        if not has_credentials:
            return PLACEHOLDER_ACCOUNT
        try:
            return boto.client("sts").get_caller_identity()["Account"]
        except Exception as e:  # expired or wrong credentials
            if self.dry_run:
                return PLACEHOLDER_ACCOUNT
            raise BincountError(f"launcher=sagemaker: AWS rejected the credentials ({e}); refresh them "
                                "(`aws sso login`, `aws configure`)") from None

    def _role(self, account: str) -> str:
        if self.role:
            return self.role
        if not self.dry_run:
            try:  # inside SageMaker Studio or a notebook instance the role is known
                from sagemaker import get_execution_role
                return get_execution_role()
            except Exception:
                raise BincountError("launcher.role: set launcher.role=arn:aws:iam::ACCOUNT:role/NAME (or "
                                    "SAGEMAKER_ROLE), a role SageMaker can assume; see README "
                                    "'Training on SageMaker'") from None
        return f"arn:aws:iam::{account}:role/SageMakerExecutionRole"

    # -- the estimator ----------------------------------------------------------------------
    def _profiler_args(self) -> dict[str, Any]:
        from sagemaker.debugger import ProfilerConfig, ProfilerRule, rule_configs

        if not self.profiler.get("enabled", True):
            return {"disable_profiler": True}
        # Framework profiling is deprecated for PyTorch >= 2.0: system monitoring only.
        config = ProfilerConfig(system_monitor_interval_millis=int(self.profiler.get("interval_millis", 500)))
        rules = [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in self.profiler.get("rules", [])]
        return {"profiler_config": config, "rules": rules}

    def _debugger_args(self) -> dict[str, Any]:
        from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, Rule, rule_configs

        if not self.debugger.get("enabled", True):
            return {"debugger_hook_config": False, "rules": []}
        every = {"save_interval": str(self.debugger.get("save_interval", 100))}
        ours = {c: CollectionConfig(name=c, parameters=every) for c in self.debugger.get("collections", [])}
        hook = DebuggerHookConfig(hook_parameters=every, collection_configs=list(ours.values()))
        rules = []
        for name in self.debugger.get("rules", []):
            if not hasattr(rule_configs, name):
                raise BincountError(f"launcher.debugger.rules: SageMaker has no built-in rule {name!r}")
            rule = Rule.sagemaker(getattr(rule_configs, name)())
            # A rule brings its own copy of a collection (e.g. gradients every 500 steps); the SDK would
            # send both. Keep ours for the collections we save, the rule's for the others (relu_input).
            rule.collection_configs = [ours.get(c.name, c) for c in rule.collection_configs]
            rules.append(rule)
        return {"debugger_hook_config": hook, "rules": rules}

    def estimator(self, hyperparameters: dict[str, str], role: str, s3_root: str, source_uri: str, session):
        from sagemaker.pytorch import PyTorch

        profiler, debugger = self._profiler_args(), self._debugger_args()
        environment = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "BINCOUNT_NO_PROGRESS": "1",
                       **{str(k): str(v) for k, v in self.environment.items()}}
        return PyTorch(
            entry_point=ENTRY_POINT, source_dir=source_uri, role=role,
            framework_version=self.framework_version, py_version=self.py_version,
            instance_count=self.instance_count, instance_type=self.instance_type, volume_size=self.volume_size,
            # No `distribution`: the v2 SDK refuses pytorchddp/torch_distributed on CPU instances. One
            # process per host; the entry derives the node rank from SM_HOSTS (see sagemaker_entry).
            hyperparameters=hyperparameters, environment=environment,
            output_path=self.output_path or f"{s3_root}/output",
            # checkpoint_local_path stays SageMaker's default /opt/ml/checkpoints: setting it would make
            # the SDK drop the debugger hook of a multi-instance job.
            checkpoint_s3_uri=self.checkpoint_s3_uri or f"{s3_root}/checkpoints/{self.job_name}",
            use_spot_instances=self.spot, max_run=self.max_run,
            max_wait=(self.max_wait or 2 * self.max_run) if self.spot else None,
            tags=_tags(self.tags), base_job_name=self.base_job_name, sagemaker_session=session,
            **{k: v for k, v in profiler.items() if k != "rules"},
            **{k: v for k, v in debugger.items() if k != "rules"},
            rules=debugger.get("rules", []) + profiler.get("rules", []),
        )

    def _channels(self, s3_root: str) -> dict:
        from sagemaker.inputs import TrainingInput

        channels = {name: uri for name, uri in self.inputs.items() if uri}
        channels.setdefault("train", f"{s3_root}/data/abid")
        for name, uri in channels.items():
            if not str(uri).startswith("s3://"):
                raise BincountError(f"launcher.inputs.{name}: {uri!r} is not an s3:// URI; upload the ABID "
                                    f"folder first (aws s3 sync DIR s3://BUCKET/{self.prefix}/data/abid)")
        # Every host gets the whole data set; DDP's sampler splits it between the hosts.
        return {name: TrainingInput(uri, distribution="FullyReplicated") for name, uri in channels.items()}

    # -- launch -----------------------------------------------------------------------------
    def launch(self, cfg: DictConfig) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from sagemaker.utils import name_from_base

        run_dir = Path(cfg.paths.output_dir)
        hyperparameters = job_hyperparameters(list(HydraConfig.get().overrides.task))
        boto, session, has_credentials = self._sessions()
        account = self._account(boto, has_credentials)
        region = boto.region_name
        if self.bucket:
            bucket = self.bucket
        elif self.dry_run:
            bucket = f"sagemaker-{region}-{account}"  # what the SDK's default bucket would be
        else:
            bucket = session.default_bucket()  # creates sagemaker-REGION-ACCOUNT if missing
        role = self._role(account)
        self.job_name = self.job_name or name_from_base(self.base_job_name)
        s3_root = f"s3://{bucket}/{self.prefix}"
        source = pack_source(run_dir / "sourcedir.tar.gz")
        source_key = f"{self.prefix}/code/{self.job_name}/sourcedir.tar.gz"
        estimator = self.estimator(hyperparameters, role, s3_root, f"s3://{bucket}/{source_key}", session)
        channels = self._channels(s3_root)

        if self.dry_run:
            request = capture_request(session, "CreateTrainingJob", {"TrainingJobArn": "dry-run"},
                                      lambda: estimator.fit(channels, job_name=self.job_name, wait=False, logs="None"))
            (run_dir / REQUEST_NAME).write_text(json.dumps(request, indent=2))
            print(json.dumps(request, indent=2))
            if not has_credentials:
                print(f"dry run: no AWS credentials, so account {PLACEHOLDER_ACCOUNT} and the role are "
                      "placeholders; nothing was uploaded or submitted")
            elif not self.role:
                print("dry run: the role is a placeholder (set launcher.role); nothing was uploaded or submitted")
            log.info("dry run: CreateTrainingJob request for %s written to %s", self.job_name, run_dir / REQUEST_NAME)
            return None

        boto.client("s3").upload_file(str(source), bucket, source_key)
        estimator.fit(channels, job_name=self.job_name, wait=False, logs="None")
        job = session.describe_training_job(self.job_name)
        summary = job_outputs(job)
        (run_dir / JOB_NAME).write_text(json.dumps(summary, indent=2))
        log.info("submitted SageMaker training job %s (%d x %s): %s", self.job_name, self.instance_count,
                 self.instance_type, summary["console"])
        if not self.wait:
            return None
        from sagemaker.exceptions import UnexpectedStatusException

        try:
            session.logs_for_job(self.job_name, wait=True, log_type=self.logs)
        except UnexpectedStatusException as e:
            raise BincountError(f"SageMaker job {self.job_name} did not complete ({e}); its log is above and in "
                                f"CloudWatch, its page: {summary['console']}") from None
        if not self.download:
            return None
        fetch_artifacts(boto, summary["model"], run_dir)
        metrics = run_dir / "metrics.json"
        if not metrics.is_file():
            return None
        best = json.loads(metrics.read_text()).get("best_val", {}).get(cfg.optimized_metric)
        return float(best) if best is not None else None


def capture_request(session, operation: str, answer: dict, submit: Callable[[], Any]) -> dict:
    """Run ``submit`` (the SDK's real submission) up to the wire: botocore builds the ``operation``
    request and validates it against the API model, then this handler answers ``answer`` in place of
    AWS, so nothing is sent and no credentials are needed. Returns the request as it would be sent."""
    from botocore.awsrequest import AWSResponse

    captured: dict = {}

    def handler(params, **_):
        captured.update(json.loads(params["body"]))
        return AWSResponse(params["url"], 200, {}, None), answer

    event = f"before-call.sagemaker.{operation}"
    events = session.sagemaker_client.meta.events
    events.register_first(event, handler)
    try:
        submit()
    finally:
        events.unregister(event, handler)
    return captured


def job_outputs(job: dict) -> dict:
    """Where a training job's outputs land (model, debugger tensors, profiler and rule reports)."""
    name = job["TrainingJobName"]
    output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    region = job["TrainingJobArn"].split(":")[3]
    return {
        "job_name": name,
        "arn": job["TrainingJobArn"],
        "model": job.get("ModelArtifacts", {}).get("S3ModelArtifacts", f"{output}/{name}/output/model.tar.gz"),
        "debugger_tensors": (job.get("DebugHookConfig") or {}).get("S3OutputPath", f"{output}").rstrip("/")
        + f"/{name}/debug-output",
        "profiler_output": f"{output}/{name}/profiler-output",
        "rule_output": f"{output}/{name}/rule-output",
        "checkpoints": (job.get("CheckpointConfig") or {}).get("S3Uri"),
        "console": f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}",
    }


def fetch_artifacts(boto, model_uri: str, run_dir: Path) -> Path:
    """Download the job's model.tar.gz (the container's /opt/ml/model: checkpoint, metrics.json,
    plots, logs) and unpack it into the local run directory."""
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    archive = run_dir / "model.tar.gz"
    boto.client("s3").download_file(bucket, key, str(archive))
    with tarfile.open(archive) as tar:
        tar.extractall(run_dir, filter="data")
    log.info("job outputs unpacked into %s", run_dir)
    return run_dir
