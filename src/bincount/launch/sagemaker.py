"""The SageMaker launcher: ship bincount and the command line's Hydra overrides to a SageMaker PyTorch
training job, with SageMaker's profiler and debugger attached, follow it, fetch its outputs.

The job runs ``sagemaker_train.py`` (bincount.launch.sagemaker_entry), which turns the overrides back
into the identical Hydra config and calls the same ``train(cfg)`` as a local run. Sessions, the bucket,
the role, the S3 layout, the source tarball and the dry run come from the one job builder,
``bincount.aws.sagemaker_job``; the settings are grouped as in conf/launcher/sagemaker.yaml.
"""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bincount.aws.sagemaker_job import CHECKPOINTS, CODE, DATA, ENTRY_POINT, OUTPUT, SageMakerSession, pack_source
from bincount.errors import BincountError
from bincount.layout import METRICS, SAGEMAKER_JOB, SAGEMAKER_REQUEST, SOURCE_TARBALL

log = logging.getLogger(__name__)

# Overrides that describe this machine, not the training: the container sets its own.
LOCAL_ONLY = (
    "launcher",
    "hydra",
    "data.root",
    "paths.",
    "trainer.num_nodes",
    "trainer.devices",
    "trainer.strategy",
    "ckpt_path",
)


# The groups of conf/launcher/sagemaker.yaml, which holds every default (and says what each setting does).
@dataclass
class Aws:
    """Where and as whom: region (null: the AWS config's, else us-east-1), role ARN, bucket (null: the
    SDK's sagemaker-REGION-ACCOUNT) and the key prefix of everything bincount writes there."""

    region: str | None
    role: str | None
    bucket: str | None
    prefix: str
    sdk_telemetry: bool


@dataclass
class Job:
    base_name: str
    name: str | None
    wait: bool
    logs: str
    download: bool
    framework_version: str
    py_version: str
    inputs: dict[str, str | None]
    output_path: str | None
    checkpoint_s3_uri: str | None
    tags: dict
    environment: dict


@dataclass
class Instances:
    type: str
    count: int
    volume_size: int


@dataclass
class Spot:
    enabled: bool
    max_run: int
    max_wait: int | None


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


def _tags(tags: dict | None) -> list[dict[str, str]]:
    return [{"Key": str(k), "Value": str(v)} for k, v in (tags or {}).items()]


class SageMakerLauncher:
    """Builds a ``sagemaker.pytorch.PyTorch`` estimator from ``conf/launcher/sagemaker.yaml``."""

    def __init__(
        self, aws: dict, job: dict, instances: dict, spot: dict, profiler: dict, debugger: dict, dry_run: bool = False
    ):
        self.aws, self.job = Aws(**aws), Job(**job)
        self.instances, self.spot = Instances(**instances), Spot(**spot)
        self.profiler, self.debugger = dict(profiler), dict(debugger)
        self.dry_run = dry_run

    def session(self) -> SageMakerSession:
        return SageMakerSession(
            self.aws.region,
            self.aws.role,
            self.aws.bucket,
            self.aws.prefix,
            self.dry_run,
            self.aws.sdk_telemetry,
            keys="launcher.aws.",
            dry_run_key="launcher.dry_run",
        )

    # -- the estimator ----------------------------------------------------------------------
    def _profiler_args(self) -> dict[str, Any]:
        from sagemaker.debugger import ProfilerConfig, ProfilerRule, rule_configs

        if not self.profiler.get("enabled", True):
            return {"disable_profiler": True}
        # Framework profiling is deprecated for PyTorch >= 2.0: system monitoring only.
        config = ProfilerConfig(system_monitor_interval_millis=int(self.profiler["interval_millis"]))
        rules = [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in self.profiler.get("rules", [])]
        return {"profiler_config": config, "rules": rules}

    def _debugger_args(self) -> dict[str, Any]:
        from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, Rule, rule_configs

        if not self.debugger.get("enabled", True):
            return {"debugger_hook_config": False, "rules": []}
        every = {"save_interval": str(self.debugger["save_interval"])}
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

    def estimator(self, hyperparameters: dict[str, str], sm: SageMakerSession, source_uri: str, job_name: str):
        from sagemaker.pytorch import PyTorch

        profiler, debugger = self._profiler_args(), self._debugger_args()
        environment = {
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "BINCOUNT_NO_PROGRESS": "1",
            **{str(k): str(v) for k, v in self.job.environment.items()},
        }
        return PyTorch(
            entry_point=ENTRY_POINT,
            source_dir=source_uri,
            role=sm.role_arn,
            framework_version=self.job.framework_version,
            py_version=self.job.py_version,
            instance_count=self.instances.count,
            instance_type=self.instances.type,
            volume_size=self.instances.volume_size,
            # No `distribution`: the v2 SDK refuses pytorchddp/torch_distributed on CPU instances. One
            # process per host; the entry derives the node rank from SM_HOSTS (see sagemaker_entry).
            hyperparameters=hyperparameters,
            environment=environment,
            output_path=self.job.output_path or sm.uri(OUTPUT),
            # checkpoint_local_path stays SageMaker's default /opt/ml/checkpoints: setting it would make
            # the SDK drop the debugger hook of a multi-instance job.
            checkpoint_s3_uri=self.job.checkpoint_s3_uri or sm.uri(CHECKPOINTS, job_name),
            use_spot_instances=self.spot.enabled,
            max_run=self.spot.max_run,
            max_wait=(self.spot.max_wait or 2 * self.spot.max_run) if self.spot.enabled else None,
            tags=_tags(self.job.tags),
            base_job_name=self.job.base_name,
            sagemaker_session=sm.sdk,
            **{k: v for k, v in profiler.items() if k != "rules"},
            **{k: v for k, v in debugger.items() if k != "rules"},
            rules=debugger.get("rules", []) + profiler.get("rules", []),
        )

    def channels(self, sm: SageMakerSession) -> dict:
        from sagemaker.inputs import TrainingInput

        channels = {name: uri for name, uri in self.job.inputs.items() if uri}
        channels.setdefault("train", sm.uri(DATA))
        for name, uri in channels.items():
            if not str(uri).startswith("s3://"):
                raise BincountError(
                    f"launcher.job.inputs.{name}: {uri!r} is not an s3:// URI; upload the ABID "
                    f"folder first (bincount upload DIR {sm.uri(DATA)})"
                )
        # Every host gets the whole data set; DDP's sampler splits it between the hosts.
        return {name: TrainingInput(uri, distribution="FullyReplicated") for name, uri in channels.items()}

    def source(self, sm: SageMakerSession, folder: Path, job_name: str) -> tuple[Path, str]:
        """The source tarball, packed into ``folder``, and the key it goes to (``PREFIX/code/JOB/``)."""
        return pack_source(folder / SOURCE_TARBALL), sm.key(CODE, job_name, SOURCE_TARBALL)

    # -- launch -----------------------------------------------------------------------------
    def launch(self, cfg: DictConfig) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from sagemaker.utils import name_from_base

        run_dir = Path(cfg.paths.output_dir)
        hyperparameters = job_hyperparameters(list(HydraConfig.get().overrides.task))
        sm = self.session()
        sm.role_arn  # noqa: B018  (refuse a missing role before packing or creating anything)
        job_name = self.job.name or name_from_base(self.job.base_name)
        source, source_key = self.source(sm, run_dir, job_name)
        estimator = self.estimator(hyperparameters, sm, f"s3://{sm.bucket_name}/{source_key}", job_name)
        channels = self.channels(sm)

        def submit():
            estimator.fit(channels, job_name=job_name, wait=False, logs="None")

        if self.dry_run:
            request = sm.capture(sm.sdk.sagemaker_client, "CreateTrainingJob", {"TrainingJobArn": "dry-run"}, submit)
            sm.write_dry_run(request, run_dir / SAGEMAKER_REQUEST, f"CreateTrainingJob of {job_name}")
            return None

        sm.upload(source, source_key)
        submit()
        job = sm.sdk.describe_training_job(job_name)
        summary = job_outputs(job, sm)
        (run_dir / SAGEMAKER_JOB).write_text(json.dumps(summary, indent=2))
        log.info(
            "submitted SageMaker training job %s (%d x %s): %s",
            job_name,
            self.instances.count,
            self.instances.type,
            summary["console"],
        )
        if not self.job.wait:
            return None
        from sagemaker.exceptions import UnexpectedStatusException

        try:
            sm.sdk.logs_for_job(job_name, wait=True, log_type=self.job.logs)
        except UnexpectedStatusException as e:
            raise BincountError(
                f"SageMaker job {job_name} did not complete ({e}); its log is above and in "
                f"CloudWatch, its page: {summary['console']}"
            ) from None
        if not self.job.download:
            return None
        fetch_artifacts(sm, summary["model"], run_dir)
        metrics = run_dir / METRICS
        if not metrics.is_file():
            return None
        best = json.loads(metrics.read_text()).get("best_val", {}).get(cfg.optimized_metric)
        return float(best) if best is not None else None


def job_outputs(job: dict, sm: SageMakerSession) -> dict:
    """Where a training job's outputs land (model, debugger tensors, profiler and rule reports)."""
    name = job["TrainingJobName"]
    output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return {
        "job_name": name,
        "arn": job["TrainingJobArn"],
        "model": job.get("ModelArtifacts", {}).get("S3ModelArtifacts", f"{output}/{name}/output/model.tar.gz"),
        "debugger_tensors": (job.get("DebugHookConfig") or {}).get("S3OutputPath", f"{output}").rstrip("/")
        + f"/{name}/debug-output",
        "profiler_output": f"{output}/{name}/profiler-output",
        "rule_output": f"{output}/{name}/rule-output",
        "checkpoints": (job.get("CheckpointConfig") or {}).get("S3Uri"),
        "console": sm.console("jobs", name),
    }


def fetch_artifacts(sm: SageMakerSession, model_uri: str, run_dir: Path) -> Path:
    """Download the job's model.tar.gz (the container's /opt/ml/model: checkpoint, metrics.json,
    plots, logs) and unpack it into the local run directory."""
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    archive = run_dir / "model.tar.gz"
    sm.client("s3").download_file(bucket, key, str(archive))
    with tarfile.open(archive) as tar:
        tar.extractall(run_dir, filter="data")
    log.info("job outputs unpacked into %s", run_dir)
    return run_dir
