"""bincount as a user installs it: the wheel built from this checkout, installed into a fresh virtual
environment outside the checkout (its dependencies are the ones already on disk: this environment's
site-packages, reached through a .pth file, so nothing is downloaded), then run from an empty folder.
Training, evaluation, the cost report and a deploy dry run must work with no checkout in sight: the
configs and the price table come from the package."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bincount.paths import PROJECT_ROOT


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(the venv's bin folder, an empty working folder outside the checkout, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "SAGEMAKER_"))}
    env.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
            "AWS_CONFIG_FILE": str(tmp / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "BINCOUNT_NO_PROGRESS": "1",
        }
    )
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "dist"),
            str(PROJECT_ROOT),
        ],
        tmp,
        env,
    )
    (wheel,) = (tmp / "dist").glob("bincount-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], tmp, env)
    python = tmp / "venv" / "bin" / "python"
    target = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip()
    )
    # the dependencies already on disk (torch and the rest), as --system-site-packages would give them
    (target / "dependencies_on_disk.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp,
        env,
    )
    work = tmp / "work"
    work.mkdir()
    return python.parent, work, env


def test_the_wheel_holds_the_package_and_its_configs(installed):
    bin_dir, work, env = installed
    code = (
        "import bincount, bincount.config as c; print(json.dumps({'package': bincount.__file__, "
        "'train': str(c.config_file('train.yaml')), 'prices': str(c.config_file('cost', 'prices.yaml'))}))"
    )
    where = json.loads(run([str(bin_dir / "python"), "-c", "import json; " + code], work, env).stdout)
    venv = str(bin_dir.parent)
    assert all(p.startswith(venv) and Path(p).is_file() for p in where.values()), where
    assert str(PROJECT_ROOT) not in json.dumps(where)


@pytest.mark.slow  # ~50 s: four commands, each a fresh Python importing torch and Lightning
def test_train_eval_cost_report_and_deploy_run_from_the_wheel(installed, synthetic_abid):
    bin_dir, work, env = installed
    bincount = str(bin_dir / "bincount")
    train_run, eval_run = work / "run", work / "eval"
    run(
        [
            bincount,
            "train",
            "debug=tiny",
            f"data.root={synthetic_abid}",
            "trainer.max_epochs=2",
            "logger=csv",
            f"hydra.run.dir={train_run}",
        ],
        work,
        env,
    )
    metrics = json.loads((train_run / "metrics.json").read_text())
    ckpt = train_run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and metrics["test/images"] == metrics["data"]["images"]["test"] > 0
    sources = yaml.safe_load((train_run / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    assert {"path": "bincount.conf", "schema": "pkg", "provider": "main"} in sources  # the package's configs
    assert str(PROJECT_ROOT) not in json.dumps(sources)

    run([bincount, "eval", f"ckpt_path={ckpt}", f"data.root={synthetic_abid}", f"hydra.run.dir={eval_run}"], work, env)
    again = json.loads((eval_run / "metrics.json").read_text())
    assert again["test/acc"] == pytest.approx(metrics["test/acc"]) and again["overlap_with_training"] == 0

    out = run([bincount, "cost-report", str(train_run)], work, env).stdout
    assert "Recommended:" in out and (train_run / "cost_report.md").is_file()
    assert "us-east-1" in out  # the shipped price table's region

    pytest.importorskip("sagemaker", reason="the sagemaker extra is not installed")
    r = run([bincount, "deploy", f"artifact={ckpt}", "dry_run=true", "name=bins"], work, env)
    plan = json.loads(r.stdout)
    assert plan["CreateEndpoint"]["EndpointName"] == "bins" and plan["S3Upload"]["File"].endswith("model.tar.gz")
    assert "dry run: nothing was uploaded or created" in r.stderr
