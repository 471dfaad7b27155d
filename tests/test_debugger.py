"""The debuggers on real trainings: the in-process debugger's records, rules and report; SageMaker
Debugger's own hook (smdebug, in .venv-smdebug) registered by our callback from the hook config the
launcher sends, its trial read back with smdebug.trials.create_trial and checked against the
in-process records of the same run; `bincount debug-report` on both."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from bincount.cli import main as bincount
from bincount.data.dataset import BinImageDataset
from bincount.data.records import read_abid
from bincount.data.transforms import eval_transform
from bincount.model.counter import build_backbone
from bincount.monitor.rules import (
    LossNotDecreasing,
    Overfit,
    PoorWeightInitialization,
    VanishingGradient,
    build_rules,
    tensor_stats,
)
from bincount.paths import PROJECT_ROOT
from bincount.training import train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice
from helpers.synthetic_abid import make_synthetic_abid

SMDEBUG_PYTHON = PROJECT_ROOT / ".venv-smdebug" / "bin" / "python"


@pytest.fixture(scope="module")
def slice40(dev224, tmp_path_factory) -> Path:
    """8 real images per count: 30 train, 5 val, 5 test."""
    return make_abid_slice(dev224, tmp_path_factory.mktemp("abid40"), ids_by_count(dev224, 8))


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_tiny(data: Path, out: Path, extra: list[str]) -> Path:
    cfg = compose_cfg(
        "train",
        TINY
        + [f"data.root={data}", "data.batch_size=10", "logger=csv", "test=false", "callbacks.debugger.save_interval=2"]
        + extra,
        out,
    )
    train(cfg)
    return out / "debugger"


def test_local_debugger_records_collections_and_writes_a_report(slice40, tmp_path):
    d = run_tiny(slice40, tmp_path / "run", ["trainer.max_epochs=2"])
    losses = rows(d / "losses.jsonl")
    train_steps = [r["step"] for r in losses if r["mode"] == "train"]
    assert train_steps == list(range(6))  # 30 images / 10 per batch = 3 steps, 2 epochs
    assert {r["step"] for r in losses if r["mode"] == "eval"} == {3, 6}  # after each epoch, sanity check left out
    tensors = rows(d / "tensors.jsonl")
    assert {r["collection"] for r in tensors} == {"weights", "biases", "gradients"}
    assert {r["step"] for r in tensors} == {0, 2, 4}
    model = build_backbone("resnet10t", 5)
    n_params = len(list(model.named_parameters()))
    assert len([r for r in tensors if r["step"] == 0 and r["collection"] != "gradients"]) == n_params
    assert all(r["norm"] >= 0 and r["std"] >= 0 and r["nonfinite"] == 0 for r in tensors)
    report = json.loads((d / "report.json").read_text())
    assert set(report["rules"]) == {
        "vanishing_gradient",
        "exploding_gradient",
        "loss_not_decreasing",
        "overfit",
        "poor_weight_initialization",
    }
    # a sound initialisation and no NaN in a healthy run
    assert not report["rules"]["poor_weight_initialization"]["triggered"]
    assert not report["rules"]["exploding_gradient"]["triggered"]
    assert (d / "report.png").is_file()

    out = tmp_path / "again.png"
    assert bincount(["debug-report", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


@pytest.fixture(scope="module")
def boxes(tmp_path_factory) -> Path:
    """40 synthetic bins per count (coloured boxes, tests/helpers/synthetic_abid.py): 160 training images,
    20 steps an epoch at batch 8, and a task a tiny network learns steadily."""
    return make_synthetic_abid(tmp_path_factory.mktemp("boxes"), per_count=40)


def fired(debugger_dir: Path) -> set[str]:
    return {n for n, r in json.loads((debugger_dir / "report.json").read_text())["rules"].items() if r["triggered"]}


def train_losses(debugger_dir: Path) -> list[float]:
    return [r["loss"] for r in rows(debugger_dir / "losses.jsonl") if r["mode"] == "train"]


def shipped_rules() -> dict:
    """The rules and their settings as conf/callbacks/debugger.yaml ships them."""
    from omegaconf import OmegaConf

    from bincount.config import compose

    return OmegaConf.to_container(compose("train").callbacks.debugger.rules)


def test_the_quickstart_recipe_raises_no_false_alarm():
    """A real quick-start run's records (tests/data/, 4 epochs on dev-224): the debugger shipped before
    warned loss_not_decreasing at step 29 (a 0.3 % wiggle between two 10-step windows) and
    vanishing_gradient at step 120 (2 of 62 layers: an idle residual branch). The shipped rules stay
    silent on every step of it; the old way of judging both would still fire."""
    records = json.loads((Path(__file__).parent / "data" / "quickstart_debugger_records.json").read_text())
    rules = {r.name: r for r in build_rules(shipped_rules())}
    losses = records["train_loss"]
    assert not any(rules["loss_not_decreasing"].check_train_loss(i, losses[: i + 1]) for i in range(len(losses)))
    for step, values in records["gradient_abs_mean"].items():
        stats = {name: {"abs_mean": v} for name, v in zip(records["layers"], values)}
        assert rules["vanishing_gradient"].check_tensors(int(step), "gradients", stats, {}) is None, step
    # judged as before (two successive 10-step windows; any single layer), the same records fire
    successive = LossNotDecreasing(num_steps=10, diff_percent=0.1, patience=1)
    assert next(i for i in range(len(losses)) if successive.check_train_loss(i, losses[: i + 1])) == 29
    any_layer = VanishingGradient(threshold=1e-7, min_share=0, patience=1, start_step=1)
    stats = {n: {"abs_mean": v} for n, v in zip(records["layers"], records["gradient_abs_mean"]["120"])}
    assert "2 of 62 layers" in any_layer.check_tensors(120, "gradients", stats, {})


def test_a_quickstart_run_validating_its_weight_average_raises_no_false_overfit_alarm():
    """The losses of a whole quick-start run with its moving average of the weights (tests/data/): validation
    measures the average, which trails the network in the first epochs (validation loss 12 % above training
    loss at step 254). The quick start's overfit rule starts at the average's horizon (500 steps) and stays
    silent on every validation of it; from step 0 it fires there; and a real overfit later still fires."""
    from bincount.config import compose

    record = json.loads((Path(__file__).parent / "data" / "quickstart_ema_losses.json").read_text())
    train, evals = record["train_loss"], {int(step): v for step, v in record["eval_losses"].items()}
    shipped = dict(compose("train", ["experiment=quickstart"]).callbacks.debugger.rules.overfit)

    def first_alarm(rule: Overfit, evals: dict[int, list[float]]) -> int | None:
        previous = 0
        for step in sorted(evals):
            if rule.check_eval(step, train[previous:step], evals[step]):
                return step
            previous = step
        return None

    assert first_alarm(Overfit(**shipped), evals) is None
    assert first_alarm(Overfit(**{**shipped, "start_step": 0}), evals) == 254
    overfitting = {step: [v * 1.3 for v in losses] if step > 2000 else losses for step, losses in evals.items()}
    assert 2000 < first_alarm(Overfit(**shipped), overfitting) <= 2000 + 3 * 127


def test_a_whole_quickstart_run_raises_no_stall_but_a_real_stall_does():
    """The training losses of a whole 24-epoch quick-start run (tests/data/): flat for 200 steps mid-run at a
    high learning rate, then falling again. 50-step windows called that a stall at step 1149; the shipped
    windows stay silent on every step, and still fire once the same run stops learning for good."""
    record = json.loads((Path(__file__).parent / "data" / "quickstart24_train_loss.json").read_text())
    losses = record["train_loss"]
    rule = next(r for r in build_rules(shipped_rules()) if r.name == "loss_not_decreasing")
    assert not any(rule.check_train_loss(i, losses[:i]) for i in range(1, len(losses) + 1))
    fifty = LossNotDecreasing(num_steps=50, diff_percent=0.1, patience=4)
    assert next(i for i in range(1, len(losses) + 1) if fifty.check_train_loss(i, losses[:i])) == 1150
    # the run stalls after step 1000: its loss stays at that window's level (noise included) from then on
    stalled = losses[:1000] + losses[900:1000] * 10
    fires = [i for i in range(1, len(stalled) + 1) if rule.check_train_loss(i, stalled[:i])]
    assert fires and 1000 < fires[0] <= 1000 + 5 * rule.num_steps


def test_the_longer_cpu_recipe_raises_no_stall_but_a_real_stall_does():
    """The training losses of a whole 45-epoch cpu_hour run (tests/data/): 201 steps an epoch, flat for up to 900
    steps at a time and then falling again, while validation accuracy still rose. The default 400-step stall
    warned at step 2299 (and 13 times after); cpu_hour's setting stays silent on every step, and still fires once
    the same run stops learning for good."""
    from omegaconf import OmegaConf

    from bincount.config import compose

    losses = json.loads((Path(__file__).parent / "data" / "cpu_hour45_train_loss.json").read_text())["train_loss"]
    rules = OmegaConf.to_container(compose("train", ["experiment=cpu_hour"]).callbacks.debugger.rules)
    rule = next(r for r in build_rules(rules) if r.name == "loss_not_decreasing")
    assert not any(rule.check_train_loss(i, losses[:i]) for i in range(1, len(losses) + 1))
    default = next(r for r in build_rules(shipped_rules()) if r.name == "loss_not_decreasing")
    assert next(i for i in range(1, len(losses) + 1) if default.check_train_loss(i, losses[:i])) == 2300
    # the run stalls after step 4000: its loss stays at that window's level (noise included) from then on
    stalled = losses[:4000] + losses[3900:4000] * 20
    fires = [i for i in range(1, len(stalled) + 1) if rule.check_train_loss(i, stalled[:i])]
    assert fires and 4000 < fires[0] <= 4000 + (rule.patience + 1) * rule.num_steps


def test_a_healthy_run_warns_of_nothing(boxes, tmp_path, caplog):
    """A short run that learns, every rule on as shipped: the gradient, loss and initialisation rules stay
    silent. (overfit is left out here: on 160 synthetic images the validation loss runs more than 10 % above
    the training loss within three epochs, which is what that rule reports.)"""
    caplog.set_level(logging.WARNING, logger="bincount.callbacks.debugger")
    d = run_tiny(
        boxes, tmp_path / "run", ["trainer.max_epochs=3", "data.batch_size=8", "callbacks.debugger.save_interval=5"]
    )
    losses = train_losses(d)
    assert len(losses) == 60 and sum(losses[-20:]) < 0.95 * sum(losses[:20])  # it learned
    assert fired(d) - {"overfit"} == set()
    assert [line for line in caplog.text.splitlines() if "debugger:" in line and "overfit" not in line] == []


def test_rules_fire_on_a_diverging_run(boxes, tmp_path, caplog):
    """Adam at lr 1e4 wrecks the weights: gradients explode; the debugger warns while training and says
    so in its report."""
    caplog.set_level(logging.WARNING, logger="bincount.callbacks.debugger")
    d = run_tiny(boxes, tmp_path / "run", ["trainer.max_epochs=2", "data.batch_size=8", "model.optimizer.lr=1e4"])
    assert "exploding_gradient" in fired(d) and "poor_weight_initialization" not in fired(d)
    assert "debugger: exploding_gradient at step" in caplog.text


def test_rules_fire_on_a_dead_network(boxes, tmp_path, caplog):
    """Every weight zero (model.weights= a file of zeros): nothing reaches the head and no gradient flows
    back through the network."""
    from safetensors.torch import save_file

    caplog.set_level(logging.WARNING, logger="bincount.callbacks.debugger")
    zeros = tmp_path / "zeros.safetensors"
    save_file({k: torch.zeros_like(v) for k, v in build_backbone("resnet10t", 5).state_dict().items()}, str(zeros))
    d = run_tiny(
        boxes,
        tmp_path / "run",
        ["trainer.max_epochs=3", "data.batch_size=8", f"model.weights={zeros}", "callbacks.debugger.save_interval=10"],
    )
    assert {"vanishing_gradient", "poor_weight_initialization"} <= fired(d)
    assert "debugger: vanishing_gradient at step" in caplog.text
    assert "debugger: poor_weight_initialization at step 0" in caplog.text


def _real_batch(data: Path, n: int = 8):
    records, _ = read_abid(data, [1, 2, 3, 4, 5])
    ds = BinImageDataset(records[:n], [1, 2, 3, 4, 5], eval_transform(32), decode_size=32)
    x, y = zip(*(ds[i] for i in range(n)))
    return torch.stack(x), torch.as_tensor(y)


def test_initialization_and_vanishing_gradient_rules_on_real_tensors(slice40):
    rules = {r.name: r for r in build_rules(shipped_rules())}
    torch.manual_seed(0)
    model = build_backbone("resnet10t", 5)
    x, y = _real_batch(slice40)
    weights = [(n, p) for n, p in model.named_parameters() if not n.endswith("bias")]

    def check(rule, collection, named):
        stats = dict(zip((n for n, _ in named), tensor_stats([t for _, t in named])))
        return rule.check_tensors(5, collection, stats, {n: tuple(t.shape) for n, t in named})

    def grads():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]

    assert check(rules["poor_weight_initialization"], "weights", weights) is None
    # timm zero-initialises each residual block's last norm layer, so the first step's gradients are 0
    # for part of each block (why the rule starts at step 1); one SGD step later they all flow
    torch.optim.SGD(model.parameters(), lr=0.1).step() if grads() else None
    vanishing = rules["vanishing_gradient"]
    assert [check(vanishing, "gradients", grads()) for _ in range(3)] == [None] * 3
    with torch.no_grad():  # every conv 1000x too small: far off the He scale
        for _, p in weights:
            if p.ndim == 4:
                p.mul_(1e-3)
    assert "start far from a sound initialization" in check(PoorWeightInitialization(10.0), "weights", weights)
    with torch.no_grad():  # a dead network: nothing reaches the head, no gradient flows back
        for p in model.parameters():
            p.zero_()
    first, second = (check(vanishing, "gradients", grads()) for _ in range(2))
    assert first is None and "mean |gradient| <" in second  # patience: two records in a row


def smdebug_hook_config(tmp_path: Path) -> Path:
    """The DebugHookConfig of the launcher's real CreateTrainingJob request (dry run), written as
    SageMaker writes it into the container, with a local output path."""
    cfg = compose_cfg(
        "train",
        ["launcher=sagemaker", "launcher.dry_run=true", "launcher.debugger.save_interval=2"],
        tmp_path / "launch",
    )
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    instantiate(cfg.launcher).launch(cfg)
    hook = json.loads((tmp_path / "launch" / "sagemaker_request.json").read_text())["DebugHookConfig"]
    path = tmp_path / "debughookconfig.json"
    path.write_text(json.dumps({**hook, "LocalPath": str(tmp_path / "tensors")}))
    return path


@pytest.mark.slow  # ~55 s: a training in the smdebug environment, a second torch and Lightning import
@pytest.mark.skipif(
    not (SMDEBUG_PYTHON.parent.parent / ".complete").is_file(),
    reason="no .venv-smdebug: run `bash scripts/setup_smdebug.sh` (scripts/test.sh does)",
)
def test_smdebug_hook_saves_a_trial_that_matches_the_local_records(slice40, tmp_path, aws):
    config = smdebug_hook_config(tmp_path)
    run = tmp_path / "run"
    import boto3

    boto3.client("s3", endpoint_url=aws).create_bucket(Bucket="bincount-test")
    env = {
        **os.environ,
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "BINCOUNT_NO_PROGRESS": "1",
        "AWS_ENDPOINT_URL": aws,
    }
    out = subprocess.run(
        [
            str(SMDEBUG_PYTHON),
            str(PROJECT_ROOT / "tests" / "helpers" / "smdebug_trial.py"),
            str(config),
            str(run),
            str(slice40),
            "s3://bincount-test/output/job/debug-output",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trial = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(n > 0 for n in trial["collections"].values()), trial["collections"]
    assert trial["train_steps"] == [0, 2, 4] and trial["eval_steps"]  # save_interval 2, modes set
    assert trial["unfinished_files"] == []  # the hook was closed and nothing wrote after it
    # smdebug and the in-process debugger watched the same run: same losses, same gradient and weights
    local = rows(run / "debugger" / "losses.jsonl")
    local_loss = {r["step"]: r["loss"] for r in local if r["mode"] == "train"}
    for step, value in trial["train_loss"].items():
        assert value == pytest.approx(local_loss[int(step)], rel=1e-5)
    tensors = {(r["collection"], r["name"], r["step"]): r for r in rows(run / "debugger" / "tensors.jsonl")}
    for step, norm in trial["fc_grad_norm"].items():
        assert norm == pytest.approx(tensors["gradients", "model.fc.weight", int(step)]["norm"], rel=1e-4)
    for step, norm in trial["fc_weight_norm"].items():
        assert norm == pytest.approx(tensors["weights", "model.fc.weight", int(step)]["norm"], rel=1e-4)
    assert Path(trial["plot"]).stat().st_size > 10_000

    # the same trial uploaded where a job leaves it, read back from S3 by the debug report
    s3 = trial["s3"]
    assert s3["source"].startswith("s3://") and s3["losses"]["train"] == len(trial["train_loss"])
    assert s3["tensors"]["gradients"] == trial["collections"]["gradients"]
    assert Path(s3["plot"]).stat().st_size > 10_000
