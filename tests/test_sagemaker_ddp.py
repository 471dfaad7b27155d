"""The SageMaker job's entry point, run for real from the job's own source tarball (unpacked as SageMaker
unpacks it into /opt/ml/code): two processes on loopback with the container's environment (SM_HOSTS,
SM_CURRENT_HOST, a data channel, model and output dirs in temp folders) train one model with multi-node
DDP (gloo, CPU) on real ABID images, exactly as two ml.c5.xlarge hosts would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from bincount.aws.sagemaker_job import ENTRY_POINT, pack_source
from bincount.launch.sagemaker import job_hyperparameters
from bincount.launch.sagemaker_entry import Node, overrides_from_args
from conftest import TINY, ids_by_count, make_abid_slice

HOSTS = ["algo-1", "algo-2"]
PER_COUNT = 8  # 40 images: 30 train, 5 val, 5 test
BATCH = 5  # divides each rank's 15 training images: the same steps with or without drop_last


def toolkit_args(hyperparameters: dict[str, str]) -> list[str]:
    """What SageMaker's training toolkit passes the entry point (sagemaker_training.mapping.to_cmd_args):
    keys sorted, ``--key value`` (``-k value`` for one letter)."""
    args = []
    for key in sorted(hyperparameters):
        args += [f"--{key}" if len(key) > 1 else f"-{key}", hyperparameters[key]]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_env(tmp: Path, host: str, channel: Path, port: int, hosts: list[str] = HOSTS) -> dict[str, str]:
    root = tmp / host
    return {
        **os.environ,
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": host,
        "SM_NUM_GPUS": "0",
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output"),
        "BINCOUNT_CHECKPOINT_DIR": str(root / "checkpoints"),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "BINCOUNT_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
    }


def test_hyperparameters_round_trip_to_the_same_overrides():
    overrides = [
        "experiment=resnet50",
        "model.optimizer.lr=0.0003",
        "data.classes=[0,1,2,3,4,5]",
        "+trainer.gradient_clip_val=1.0",
        "~callbacks.lr_monitor",
        "seed=7",
        "s=1",
        "data.root=/home/me/abid",
        "launcher=sagemaker",
        "launcher.dry_run=true",
        "hydra.run.dir=x",
    ]
    hp = job_hyperparameters(overrides)
    # machine-specific overrides stay home; the rest comes back unchanged, in the toolkit's order
    assert sorted(overrides_from_args(toolkit_args(hp))) == sorted(overrides[:7])
    # the SDK JSON-encodes every value and the toolkit decodes it: strings pass unchanged
    assert all(json.loads(json.dumps(v)) == v for v in hp.values())


def test_node_maps_the_container_onto_config(tmp_path):
    env = host_env(tmp_path, "algo-2", tmp_path / "data", 29500)
    node = Node(env)
    assert node.rank == 1 and node.run_dir == tmp_path / "algo-2" / "output" / "node-1"
    over = node.overrides()
    assert "trainer.num_nodes=2" in over and "trainer.strategy=ddp" in over and "launcher=local" in over
    assert f"data.root={tmp_path / 'data'}" in over and not any(o.startswith("ckpt_path") for o in over)
    # after a spot interruption SageMaker restores /opt/ml/checkpoints: training goes on from last.ckpt
    (tmp_path / "algo-2" / "checkpoints").mkdir(parents=True)
    (tmp_path / "algo-2" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert f"ckpt_path={tmp_path / 'algo-2' / 'checkpoints' / 'last.ckpt'}" in Node(env).overrides()


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """The job's source dir: the launcher's sourcedir.tar.gz unpacked, as SageMaker does into /opt/ml/code."""
    tmp = tmp_path_factory.mktemp("code")
    with tarfile.open(pack_source(tmp / "sourcedir.tar.gz")) as tar:
        tar.extractall(tmp / "code", filter="data")
    return tmp / "code"


def run_job(tmp: Path, hosts: list[str], channel: Path, overrides: list[str], code: Path) -> dict[str, str]:
    """One process per host, as SageMaker starts them, with the toolkit's arguments; their output."""
    args = toolkit_args(job_hyperparameters(overrides))
    port = free_port()
    procs = {
        host: subprocess.Popen(
            [sys.executable, str(code / ENTRY_POINT), *args],
            env=host_env(tmp, host, channel, port, hosts),
            cwd=code,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for host in hosts
    }
    logs = {}
    try:
        for host, p in procs.items():
            logs[host], _ = p.communicate(timeout=300)
    finally:
        for p in procs.values():
            p.kill()
    for host, p in procs.items():
        assert p.returncode == 0, f"{host} failed:\n{logs[host][-4000:]}"
    return logs


JOB = TINY + [f"data.batch_size={BATCH}", "logger=csv", "data.root=/somewhere/local"]


@pytest.fixture(scope="module")
def ddp_job(dev224, source_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    channel = make_abid_slice(dev224, tmp / "channel", ids_by_count(dev224, PER_COUNT))
    logs = run_job(tmp, HOSTS, channel, JOB + ["trainer.max_epochs=1"], source_dir)
    for host in HOSTS:  # the job ran the unpacked tarball's bincount, not the checkout's
        assert f"bincount from {source_dir / 'bincount'}" in logs[host], logs[host][-2000:]
    return tmp, channel, logs


def test_two_node_ddp_training_in_sagemaker_environment(ddp_job):
    tmp_path, channel, logs = ddp_job

    # both processes joined one process group of two, each as its own node
    for rank, host in enumerate(HOSTS):
        assert f"host {host} = node {rank} of 2" in logs[host]
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in logs[host], logs[host][-3000:]
    # ... and split the data: rank 0 stepped through its half of the training split only
    model_dir = tmp_path / "algo-1" / "model"
    split = [line.split(",")[2] for line in (model_dir / "split_manifest.csv").read_text().splitlines()[1:]]
    n_train, n_test = split.count("train"), split.count("test")
    steps = [json.loads(x) for x in (model_dir / "debugger" / "losses.jsonl").read_text().splitlines()]
    assert len([s for s in steps if s["mode"] == "train"]) == n_train // 2 // BATCH == 3

    # the model artifact is written once, by node 0, into its model dir; node 1's stays empty
    assert (model_dir / "checkpoints" / "best.ckpt").is_file()
    ckpt = torch.load(model_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["backbone"] == "resnet10t"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # evaluation is not padded to a multiple of the world size: each test image counted once across ranks
    assert metrics["test/images"] == n_test and metrics["data"]["root"] == str(channel)
    assert not (tmp_path / "algo-2" / "model").exists() or not any((tmp_path / "algo-2" / "model").iterdir())
    assert not (tmp_path / "algo-2" / "checkpoints").exists()
    assert (tmp_path / "algo-1" / "checkpoints" / "last.ckpt").is_file()
    # node 0 composed the user's config plus the container's mapping
    cfg = yaml.safe_load((model_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["trainer"]["num_nodes"] == 2 and cfg["trainer"]["strategy"] == "ddp"
    assert cfg["data"]["root"] == str(channel) and cfg["model"]["backbone"] == "resnet10t"
    assert cfg["data"]["batch_size"] == BATCH


def test_a_restarted_job_resumes_from_the_last_checkpoint(ddp_job, source_dir, tmp_path):
    """After a spot interruption SageMaker restarts the job with /opt/ml/checkpoints restored from S3:
    training goes on after the epoch the checkpoint holds instead of starting over."""
    job, channel, _ = ddp_job
    shutil.copytree(job / "algo-1" / "checkpoints", tmp_path / "algo-1" / "checkpoints")
    logs = run_job(tmp_path, ["algo-1"], channel, JOB + ["trainer.max_epochs=2"], source_dir)
    last = tmp_path / "algo-1" / "checkpoints" / "last.ckpt"
    assert f"ckpt_path={last}" in logs["algo-1"] and "Restoring states from the checkpoint" in logs["algo-1"]
    history = json.loads((tmp_path / "algo-1" / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]  # epoch 0, done before the interruption, from the checkpoint
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "algo-1" / "model" / "debugger" / "losses.jsonl").read_text().splitlines()
        if json.loads(x)["mode"] == "train"
    ]
    interrupted = torch.load(job / "algo-1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert interrupted["epoch"] == 0 and interrupted["global_step"] > 0
    # the first part's debugger records (its folder is still on this machine) come along: every step once
    assert steps == list(range(torch.load(last, map_location="cpu", weights_only=True)["global_step"]))
