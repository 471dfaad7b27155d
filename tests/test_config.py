"""Every experiment and config option composes and instantiates; config mistakes give one line."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate

from bincount.config import check_config
from bincount.paths import PROJECT_ROOT
from conftest import CONF_DIR, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tmp_path, small_abid):
    cfg = compose_cfg("train", [f"experiment={experiment}", f"data.root={small_abid}", "model.pretrained=false"],
                      tmp_path)
    assert cfg.paths.output_dir == str(tmp_path)
    check_config(cfg)
    dm = instantiate(cfg.data)
    model = instantiate(cfg.model)
    assert model.classes == list(cfg.data.classes) == dm.classes
    assert model.hparams.image_size == dm.image_size
    trainer = instantiate(cfg.trainer)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    if cfg.model.get("optimizer"):
        assert model.configure_optimizers() is not None


def test_mission_recipe_is_the_capstones(tmp_path):
    cfg = compose_cfg("train", ["experiment=resnet50"], tmp_path)
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.data.image_size) == ("resnet50", True, 224)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (128, 10)
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"


@pytest.mark.parametrize("group", ["logger", "trainer", "callbacks", "launcher", "profiler"])
def test_every_group_option_composes_and_passes_the_type_check(group, tmp_path):
    for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        cfg = compose_cfg("train", [f"{group}={option}"], tmp_path)
        assert group in cfg
        check_config(cfg)


def test_eval_config_composes(tmp_path):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "data.split=all"], tmp_path)
    assert cfg.data.split == "all" and cfg.ckpt_path == "x.ckpt"


def _run(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)


def test_unknown_key_gives_one_line_naming_it():
    r = _run("data.batchsize=3")
    assert r.returncode != 0
    assert "data.batchsize" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_value_gives_one_line_naming_the_key(tmp_path):
    r = _run("data.root=/nonexistent/abid", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert "error: data.root: /nonexistent/abid is not an ABID-layout folder" in r.stderr
    assert "Traceback" not in r.stderr
