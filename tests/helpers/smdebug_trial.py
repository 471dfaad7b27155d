"""Run by tests/test_debugger.py inside .venv-smdebug (smdebug needs numpy<2): a short real training
with SageMaker Debugger's hook registered by bincount's callback from a SageMaker-style hook config,
then the trial read back with smdebug.trials.create_trial and plotted by `bincount debug-report`.
Prints a JSON summary on its last line.

usage: smdebug_trial.py HOOK_CONFIG RUN_DIR DATA_ROOT [S3_URI]
With S3_URI (and AWS_ENDPOINT_URL on a loopback server) the trial is also uploaded there, where a job
leaves it, and bincount's debug report reads it from S3.
"""

import json
import os
import sys
from pathlib import Path

config, run_dir, data_root = sys.argv[1:4]
s3_uri = sys.argv[4] if len(sys.argv) > 4 else None
os.environ["SMDEBUG_CONFIG_FILE_PATH"] = config  # where SageMaker would have written it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bincount.cli import main as bincount  # noqa: E402
from bincount.training import train  # noqa: E402
from conftest import TINY, compose_cfg  # noqa: E402

cfg = compose_cfg(
    "train",
    TINY
    + [
        f"data.root={data_root}",
        "data.batch_size=10",
        "trainer.max_epochs=2",
        "logger=csv",
        "callbacks.debugger.save_interval=2",
    ],
    Path(run_dir),
)
train(cfg)

from smdebug import modes  # noqa: E402
from smdebug.trials import create_trial  # noqa: E402

trial = create_trial(json.loads(Path(config).read_text())["LocalPath"])
fc_grad = next(n for n in trial.tensor_names(collection="gradients") if n.endswith("model.fc.weight"))
fc_weight = next(n for n in trial.tensor_names(collection="weights") if n.endswith("model.fc.weight"))
loss = trial.tensor_names(collection="losses")[0]
summary = {
    "collections": {c: len(trial.tensor_names(collection=c)) for c in ("weights", "biases", "gradients", "losses")},
    "train_steps": trial.steps(mode=modes.TRAIN),
    "eval_steps": trial.steps(mode=modes.EVAL),
    "loss_name": loss,
    "train_loss": {
        s: float(trial.tensor(loss).value(s, mode=modes.TRAIN)) for s in trial.tensor(loss).steps(mode=modes.TRAIN)
    },
    "fc_grad_norm": {
        s: float((trial.tensor(fc_grad).value(s, mode=modes.TRAIN) ** 2).sum() ** 0.5)
        for s in trial.tensor(fc_grad).steps(mode=modes.TRAIN)
    },
    "fc_weight_norm": {
        s: float((trial.tensor(fc_weight).value(s, mode=modes.TRAIN) ** 2).sum() ** 0.5)
        for s in trial.tensor(fc_weight).steps(mode=modes.TRAIN)
    },
}
tensors = Path(json.loads(Path(config).read_text())["LocalPath"])
summary["unfinished_files"] = sorted(str(f.relative_to(tensors)) for f in tensors.rglob("*.tmp"))
png = Path(run_dir) / "smdebug_report.png"
assert bincount(["debug-report", str(tensors), "--out", str(png)]) == 0
summary["plot"] = str(png)
if s3_uri:
    import boto3

    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    for f in tensors.rglob("*"):
        if f.is_file():
            boto3.client("s3").upload_file(str(f), bucket, f"{prefix}/{f.relative_to(tensors)}")
    from bincount.reports.debug_report import load, plot_debug

    data, _ = load(s3_uri)
    summary["s3"] = {**data.summary(), "plot": str(plot_debug(data, Path(run_dir) / "smdebug_report_s3.png"))}
print(json.dumps(summary))
