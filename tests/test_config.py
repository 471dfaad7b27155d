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
def test_every_experiment_composes_and_instantiates(experiment, tmp_path, synthetic_abid):
    cfg = compose_cfg(
        "train", [f"experiment={experiment}", f"data.root={synthetic_abid}", "model.pretrained=false"], tmp_path
    )
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


def test_debug_presets_win_over_an_experiment(tmp_path):
    tiny = compose_cfg("train", ["experiment=resnet50", "debug=tiny"], tmp_path)
    assert (tiny.model.backbone, tiny.data.image_size, tiny.trainer.accelerator) == ("resnet10t", 32, "cpu")
    assert tiny.callbacks.rich_progress_bar is None and tiny.trainer.max_epochs == 10  # the rest is the recipe's
    both = compose_cfg("train", ["debug=[tiny,fdr]"], tmp_path)
    assert both.trainer.fast_dev_run is True and both.model.backbone == "resnet10t"
    assert compose_cfg("eval", ["ckpt_path=x.ckpt", "debug=tiny"], tmp_path).trainer.accelerator == "cpu"


def test_one_optimisation_direction_for_checkpoints_and_sweeps(tmp_path):
    cfg = compose_cfg("train", ["hparams_search=optuna"], tmp_path)
    assert (cfg.callbacks.model_checkpoint.mode, cfg.hydra.sweeper.direction) == ("max", "maximize")
    cfg = compose_cfg("train", ["hparams_search=optuna", "optimized_metric=val/mae", "optimized_mode=min"], tmp_path)
    checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    assert (checkpoint.monitor, checkpoint.mode, cfg.hydra.sweeper.direction) == ("val/mae", "min", "minimize")
    with pytest.raises(Exception, match="optimized_mode: 'lowest' is neither max nor min"):
        _ = compose_cfg("train", ["hparams_search=optuna", "optimized_mode=lowest"], tmp_path).hydra.sweeper.direction


@pytest.mark.parametrize("group", ["logger", "trainer", "callbacks", "launcher", "debug", "profiler"])
def test_every_group_option_composes_and_passes_the_type_check(group, tmp_path):
    for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        cfg = compose_cfg("train", [f"{group}={option}"], tmp_path)
        assert cfg.hydra.runtime.choices[group] == option
        assert group in cfg or group == "debug"  # debug presets are overlays of the whole config
        check_config(cfg)


def test_eval_config_composes(tmp_path):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "data.split=all"], tmp_path)
    assert cfg.data.split == "all" and cfg.ckpt_path == "x.ckpt"


def _run(*args):
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )


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


def test_a_value_of_the_wrong_type_fails_at_start_in_one_line(tmp_path):
    """Before: the data was read and the model built, then a bare AssertionError. The data root here does
    not exist, so an error naming max_epochs shows nothing was read first."""
    r = _run("trainer.max_epochs=abc", "data.root=/nonexistent/abid", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error: trainer.max_epochs: 'abc' is not an integer or null" in r.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=big", "data.batch_size: 'big' is not an integer"),
        ("data.classes=[one,two]", "data.classes: ['one', 'two'] is not a list of integers"),
        ("data.check_images=3", "data.check_images: 3 is not true or false"),
        ("model.optimizer.lr=fast", "model.optimizer.lr: 'fast' is not a number or Tensor"),
        ("trainer.precision=half", "trainer.precision: 'half' is not one of 64, 32, 16 or one of 'transformer-engine'"),
        ("callbacks.debugger.save_interval=often", "callbacks.debugger.save_interval: 'often' is not an integer"),
        ("+logger.csv.flush_logs_every_n_steps=1.5", "logger.csv.flush_logs_every_n_steps: 1.5 is not an integer"),
        ("seed=abc", "seed: 'abc' is not an integer or null"),
        ("test=maybe", "test: 'maybe' is not true or false"),
        ("+trainer.max_epoch=3", "trainer.max_epoch: Trainer takes no argument 'max_epoch' (did you mean max_epochs?)"),
    ],
)
def test_every_kind_of_value_is_checked_against_its_consumer(override, message, tmp_path):
    from bincount.errors import BincountError
    from bincount.training import train

    cfg = compose_cfg("train", ["data.root=/nonexistent/abid", override], tmp_path)
    with pytest.raises(BincountError) as e:
        train(cfg)
    assert str(e.value).startswith(message)


def test_a_name_typed_as_digits_stays_a_name(tmp_path):
    cfg = compose_cfg("train", ["model.backbone=18", "data.root=2024"], tmp_path)
    check_config(cfg)
    assert cfg.model.backbone == "18" and cfg.data.root == "2024"
