"""A real Optuna sweep: `train.py -m hparams_search=optuna` as a subprocess, 4 trials on real images with
W&B logging offline; its summary names the best trial, and every trial is its own W&B run in one group."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bincount.cli import main as cli
from bincount.launch.sagemaker_tuner import metric_definitions
from bincount.paths import PROJECT_ROOT
from conftest import ids_by_count, make_abid_slice

N_TRIALS = 4


def wandb_run_record(run_file: Path):
    """The run record (id, name, group) of an offline W&B run file: a LevelDB-style log of protobuf
    records (7-byte file header, 32 KiB blocks, chunks with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = run_file.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full or first chunk
            pending = chunk
        else:  # middle or last
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            if record.HasField("run"):
                return record.run
    raise AssertionError(f"no run record in {run_file}")


@pytest.fixture(scope="module")
def sweep(dev224, tmp_path_factory):
    root = make_abid_slice(dev224, tmp_path_factory.mktemp("abid"), ids_by_count(dev224, 8))
    sweep_dir = tmp_path_factory.mktemp("multirun") / "sweep-under-test"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "BINCOUNT_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hparams_search=optuna",
        f"data.root={root}",
        "model.backbone=resnet10t",
        "data.image_size=32",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null",
        "logger=[csv,wandb]",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        "hydra.sweeper.sampler.seed=7",
        "data.batch_size=choice(8,16)",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir.parent / "stdout.txt").write_text(proc.stdout)
    return sweep_dir


@pytest.mark.slow  # the sweep fixture: 4 training trials in one process, ~35 s in all
def test_optuna_sweep_summary_names_the_best_trial(sweep):
    s = json.loads((sweep / "sweep_summary.json").read_text())
    assert len(s["trials"]) == N_TRIALS and s["completed"] == N_TRIALS
    values = [t["value"] for t in s["trials"]]
    best = s["best"]
    assert best["value"] == max(values)
    assert s["trials"][best["trial"]]["value"] == best["value"]
    trial_metrics = json.loads((sweep / str(best["trial"]) / "metrics.json").read_text())
    assert trial_metrics["best_val"]["val/acc"] == pytest.approx(best["value"])
    assert s["optuna"]["best_value"] == pytest.approx(best["value"])  # Optuna's own view agrees
    # the search space of conf/hparams_search/optuna.yaml, batch size replaced from the command line
    assert {
        "model.optimizer.lr",
        "model.optimizer.weight_decay",
        "data.batch_size",
        "data.augment.rotation",
        "data.augment.color_jitter",
        "model.backbone",
    } <= set(s["swept"])
    for t in s["trials"]:
        assert 1e-4 <= float(t["overrides"]["model.optimizer.lr"]) <= 1e-2
        assert t["overrides"]["data.batch_size"] in {"8", "16"}
        assert t["overrides"]["model.backbone"] == "resnet10t"
        assert not (sweep / str(t["trial"]) / "metrics.json").read_text().count("test/acc")  # trials skip test
    assert "hparams_search" not in best["command"] and "data.root=" in best["command"]
    assert f"**Best: trial {best['trial']}**" in (sweep / "sweep_summary.md").read_text()
    assert (sweep / "sweep_summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the sweep fixture: 4 training trials in one process, ~35 s in all
def test_sweep_trials_are_separate_wandb_runs_in_one_group(sweep):
    runs = [
        wandb_run_record(next((sweep / str(n) / "wandb").glob("offline-run-*/run-*.wandb"))) for n in range(N_TRIALS)
    ]
    assert {r.run_group for r in runs} == {f"train-sweep-{sweep.name}"}
    assert [r.display_name for r in runs] == [f"train-trial-{n}" for n in range(N_TRIALS)]
    assert len({r.run_id for r in runs}) == N_TRIALS


@pytest.mark.slow  # the sweep fixture: 4 training trials in one process, ~35 s in all
def test_trials_print_the_metric_lines_sagemakers_tuner_reads(sweep):
    stdout = (sweep.parent / "stdout.txt").read_text()
    regex = {m["Name"]: re.compile(m["Regex"]) for m in metric_definitions("val/acc")}
    per_epoch = [float(v) for v in regex["val/acc"].findall(stdout)]
    best = [float(v) for v in regex["val/acc_best"].findall(stdout)]
    values = [json.loads((sweep / str(n) / "metrics.json").read_text())["best_val"]["val/acc"] for n in range(N_TRIALS)]
    assert len(per_epoch) == N_TRIALS  # one epoch each
    assert best == pytest.approx(values, abs=1e-6)


@pytest.mark.slow  # the sweep fixture: 4 training trials in one process, ~35 s in all
def test_summary_of_an_interrupted_sweep_can_be_rewritten(sweep, tmp_path, capsys):
    copy = shutil.copytree(sweep, tmp_path / "sweep")
    (copy / "1" / "metrics.json").unlink()  # trial 1 never finished
    assert cli(["sweep-summary", str(copy), "--mode", "min"]) == 0
    s = json.loads((copy / "sweep_summary.json").read_text())
    assert s["completed"] == N_TRIALS - 1 and s["trials"][1]["status"] == "failed or running"
    done = [t["value"] for t in s["trials"] if t["value"] is not None]
    assert s["direction"] == "minimize" and s["best"]["value"] == min(done)
    assert "failed or running" in capsys.readouterr().out


def test_a_folder_without_trials_is_a_clear_error(tmp_path, capsys):
    assert cli(["sweep-summary", str(tmp_path)]) == 2
    assert "no trial folders" in capsys.readouterr().err


def test_a_summary_follows_the_sweeps_own_direction(tmp_path, capsys):
    """Trials that minimised val/mae (optimized_mode=min in their saved config): the summary picks the
    lowest without being told; --metric/--mode override it."""
    sweep = tmp_path / "sweep"
    for n, (mae, acc) in enumerate([(0.9, 0.30), (0.7, 0.25), (1.1, 0.35)]):
        (sweep / str(n) / ".hydra").mkdir(parents=True)
        (sweep / str(n) / ".hydra" / "config.yaml").write_text("optimized_metric: val/mae\noptimized_mode: min\n")
        (sweep / str(n) / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={10**-n}\n")
        (sweep / str(n) / "metrics.json").write_text(json.dumps({"best_val": {"val/mae": mae, "val/acc": acc}}))
    assert cli(["sweep-summary", str(sweep)]) == 0
    s = json.loads((sweep / "sweep_summary.json").read_text())
    assert (s["metric"], s["direction"], s["best"]["trial"]) == ("val/mae", "minimize", 1)
    assert cli(["sweep-summary", str(sweep), "--metric", "val/acc", "--mode", "max"]) == 0
    assert json.loads((sweep / "sweep_summary.json").read_text())["best"]["trial"] == 2
    assert "Best: trial 2" in capsys.readouterr().out
