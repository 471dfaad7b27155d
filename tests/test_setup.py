"""The README's first command installs bincount without its extras (`bash scripts/setup.sh core`): the script,
run for real into a fresh virtual environment, must leave every extra out and a training that runs to its test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bincount.paths import PROJECT_ROOT

# a module of each extra in pyproject.toml (wandb, sagemaker, onnx, sweep, dev)
EXTRA_MODULES = ("wandb", "sagemaker", "onnx", "onnxruntime", "optuna", "pytest", "moto")


@pytest.mark.slow
def test_core_setup_installs_no_extra_and_trains(synthetic_abid, tmp_path):
    venv = tmp_path / "venv"
    try:
        check_core_setup(venv, synthetic_abid, tmp_path / "run")
    finally:  # 5.5 GB with torch's CUDA build: not left among pytest's kept temporary folders
        shutil.rmtree(venv, ignore_errors=True)


def check_core_setup(venv: Path, data: Path, run_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"VENV": str(venv), "BINCOUNT_NO_PROGRESS": "1"})
    r = subprocess.run(
        ["bash", "scripts/setup.sh", "core"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    python = str(venv / "bin" / "python")
    probe = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    found = subprocess.run([python, "-c", probe, *EXTRA_MODULES], capture_output=True, text=True, check=True)
    assert json.loads(found.stdout) == []

    cmd = [python, "train.py", "debug=tiny", f"data.root={data}", "trainer.max_epochs=1"]
    r = subprocess.run(
        [*cmd, f"hydra.run.dir={run_dir}"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/images"] == metrics["data"]["images"]["test"] > 0
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
