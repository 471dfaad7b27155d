"""Inside a SageMaker training job: turn the job's hyperparameters back into the Hydra overrides of
the command that launched it, map the container's environment onto config (data channel, model dir,
checkpoints, nodes for DDP) and run the training app (bincount.cli.train), so every host trains with the
identical config.

Multi-node DDP without SageMaker's ``distribution`` (refused on CPU instances): one process per host;
the node rank is the host's place in ``SM_HOSTS``, the rendezvous is ``MASTER_ADDR``/``MASTER_PORT``
(the first host, unless the container or the caller set them), and Lightning's LightningEnvironment
reads them. Gloo on CPU, NCCL on GPU (Lightning's choice).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from bincount import layout
from bincount.errors import BincountError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "/opt/ml/checkpoints"  # SageMaker syncs it with checkpoint_s3_uri (spot resume)
DEFAULT_PORT = "29500"


def overrides_from_args(argv: list[str]) -> list[str]:
    """``--experiment resnet50 --~callbacks.lr_monitor ''`` -> ``["experiment=resnet50", "~callbacks.lr_monitor"]``.

    SageMaker passes each hyperparameter as ``--key value`` (``-k value`` for one-letter keys), which
    Hydra rejects; the launcher made one hyperparameter per override (launch.sagemaker.job_hyperparameters).
    """
    if len(argv) % 2:
        raise BincountError(f"sagemaker entry: expected --key value pairs, got {argv}")
    overrides = []
    for flag, value in zip(argv[::2], argv[1::2]):
        if not flag.startswith("-"):
            raise BincountError(f"sagemaker entry: expected --key before {flag!r}")
        key = flag[2:] if flag.startswith("--") else flag[1:]
        overrides.append(key if key.startswith("~") and value == "" else f"{key}={value}")
    return overrides


class Node:
    """This host's place in the job, from the container's SM_* variables."""

    def __init__(self, env: Mapping[str, str]):
        try:
            self.hosts: list[str] = json.loads(env["SM_HOSTS"])
            self.host = env["SM_CURRENT_HOST"]
            self.rank = self.hosts.index(self.host)
        except (KeyError, ValueError) as e:
            raise BincountError(
                f"sagemaker entry: SM_HOSTS/SM_CURRENT_HOST missing or inconsistent ({e}); "
                "this script runs inside a SageMaker training job"
            ) from None
        self.gpus = int(env.get("SM_NUM_GPUS") or 0)
        self.model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        self.output_dir = Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
        self.checkpoint_dir = Path(env.get("BINCOUNT_CHECKPOINT_DIR", CHECKPOINT_DIR))
        self.train_channel = env.get("SM_CHANNEL_TRAIN")

    @property
    def run_dir(self) -> Path:
        # SageMaker packs /opt/ml/model of every host into model.tar.gz: only node 0 writes there.
        return self.model_dir if self.rank == 0 else self.output_dir / f"node-{self.rank}"

    def overrides(self) -> list[str]:
        """The config this host must add to the user's overrides."""
        out = ["launcher=local", f"hydra.run.dir={self.run_dir}", f"paths.checkpoint_dir={self.checkpoint_dir}"]
        if self.train_channel:
            out.append(f"data.root={self.train_channel}")
        devices = max(self.gpus, 1)
        if len(self.hosts) > 1 or devices > 1:
            out += [f"trainer.num_nodes={len(self.hosts)}", f"trainer.devices={devices}", "trainer.strategy=ddp"]
        last = self.checkpoint_dir / layout.LAST_CHECKPOINT
        if last.is_file():  # a spot interruption: SageMaker restored the checkpoints, go on from there
            out.append(f"ckpt_path={last}")
        return out

    def rendezvous(self) -> dict[str, str]:
        return {"MASTER_ADDR": self.hosts[0], "MASTER_PORT": DEFAULT_PORT, "NODE_RANK": str(self.rank)}


def keep_best_checkpoint(node: Node) -> None:
    """Put the best checkpoint beside metrics.json in the model dir, so the unpacked model.tar.gz is a
    run directory like a local one (``eval.py ckpt_path=RUN/checkpoints/best.ckpt`` works on it)."""
    best = node.checkpoint_dir / layout.BEST_CHECKPOINT
    if node.rank == 0 and best.is_file():
        layout.best_checkpoint(node.run_dir).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(best, layout.best_checkpoint(node.run_dir))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    node = Node(os.environ)
    for key, value in node.rendezvous().items():
        if key == "NODE_RANK":
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    overrides = overrides_from_args(argv) + node.overrides()
    print(
        f"bincount: host {node.host} = node {node.rank} of {len(node.hosts)}, "
        f"rendezvous {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}, overrides {overrides}, "
        f"bincount from {Path(__file__).resolve().parents[1]}",
        flush=True,
    )
    from bincount.cli import train

    # The training app with the overrides as its command line: Hydra composes exactly as for a local run,
    # and Lightning re-runs sys.argv[0] (the app's file, not this shim) to start one process per GPU.
    sys.argv = [train.__file__, *overrides]
    train.main()
    keep_best_checkpoint(node)
