"""The wall-clock budget (bincount.callbacks.time_budget): real tiny runs on real bins, timed by the real clock."""

import math
import time
from functools import partial

import lightning as L
import pytest
import torch

from bincount.callbacks.time_budget import LENGTHEN_SPARE, TimeBudget, epochs_that_fit
from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from helpers.trainers import quiet_trainer

EPOCHS, LR = 6, 0.002


class LearningRates(L.Callback):
    """The learning rate each epoch trains with, and the length of the cosine schedule it is on."""

    def __init__(self):
        self.seen: list[float] = []
        self.schedule: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.schedule.append(trainer.lr_scheduler_configs[0].scheduler.T_max)


class SlowFirstEpoch(L.Callback):
    """Epoch 0 takes ``seconds`` longer, as on a machine busy at first: each of its steps sleeps a share."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0:
            time.sleep(self.seconds / trainer.num_training_batches)


def fit(small_abid, out, budget, scheduler=None, ckpt_path=None, extra=()):
    L.seed_everything(0, workers=True)
    dm = BinDataModule(str(small_abid), image_size=32, batch_size=32, num_workers=0, output_dir=str(out))
    scheduler = scheduler or partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=EPOCHS)
    model = CountingModel(
        backbone="resnet10t", image_size=32, optimizer=partial(torch.optim.AdamW, lr=LR), scheduler=scheduler
    )
    rates = LearningRates()
    trainer = quiet_trainer(EPOCHS, [budget, rates, *extra])
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return trainer, rates.seen, rates.schedule


def cosine(epochs: int) -> list[float]:
    return [LR * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]


def on_cosine(rates: list[float], schedules: list[int]) -> list[float]:
    """The rate of epoch e of a cosine over the epochs in force then (a re-plan may change them)."""
    return [LR * (1 + math.cos(math.pi * e / t)) / 2 for e, t in enumerate(schedules[: len(rates)])]


def test_budget_keeps_the_epochs_that_fit_on_a_cosine_ending_there(small_abid, tmp_path):
    # a budget that holds the run: all epochs, the configured schedule
    created = time.time()
    roomy = TimeBudget(minutes=60)
    trainer, rates, _ = fit(small_abid, tmp_path / "roomy", roomy)
    assert roomy.epochs == trainer.current_epoch == EPOCHS
    assert rates == pytest.approx(cosine(EPOCHS))
    plan = roomy.plan
    assert plan["per_epoch_s"] > 0 and plan["after_fit_s"] > 0
    # a budget with room for about 3 epochs of what the first run measured: fewer epochs, the cosine refitted
    # (the first budget of a young process counts from the process's start, the next from its creation)
    to_decision = roomy.start + plan["decided_s"] - created
    seconds = to_decision + plan["after_fit_s"] + roomy.margin_s + 2.5 * plan["per_epoch_s"]
    tight = TimeBudget(minutes=seconds / 60)
    assert tight.start == pytest.approx(time.time(), abs=1)
    trainer, rates, schedule = fit(small_abid, tmp_path / "tight", tight)
    assert 1 <= tight.epochs < EPOCHS
    assert trainer.current_epoch == tight.epochs == len(rates)
    # epoch 0 trained at the full rate; from epoch 1 on, the cosine over the epochs planned, down towards 0
    # (unless a run fallen behind its plan stopped early, the schedule ends where training does)
    final = trainer.lr_scheduler_configs[0].scheduler.T_max
    assert schedule[0] == EPOCHS and (final == tight.epochs or trainer.should_stop)
    assert rates == pytest.approx(on_cosine(rates, schedule), rel=1e-6)
    # the cut travels in the checkpoint: resumed with the configured epochs, the run stays where its budget ended it
    assert tight.state_dict() == {"cut_to": tight.epochs, "configured": EPOCHS}
    assert roomy.state_dict() == {"cut_to": None, "configured": EPOCHS}
    trainer.save_checkpoint(tmp_path / "tight.ckpt")
    resumed, rates, _ = fit(small_abid, tmp_path / "resumed", TimeBudget(minutes=60), ckpt_path=tmp_path / "tight.ckpt")
    assert resumed.current_epoch == tight.epochs and rates == []


def test_budget_lengthens_the_schedule_when_epochs_speed_up(small_abid, tmp_path):
    created = time.time()
    probe = TimeBudget(minutes=60)
    fit(small_abid, tmp_path / "probe", probe)
    per_epoch, after_fit = probe.plan["per_epoch_s"], probe.plan["after_fit_s"]
    to_decision = probe.start + probe.plan["decided_s"] - created
    # room for ~7 epochs, but epoch 0 runs an epoch slower: planned on it (~2 epochs each), the first plan is short
    # (~3 epochs), the next ones longer. The first plan keeps ~3x of slack for a busy machine: with room for 6 and
    # epoch 0 two epochs slower it had 1.25x, and a full suite on a 2-core VM once stopped after epoch 0
    budget = TimeBudget(minutes=(to_decision + after_fit + probe.margin_s + 7 * per_epoch) / 60)
    trainer, rates, schedule = fit(small_abid, tmp_path / "slow", budget, extra=[SlowFirstEpoch(per_epoch)])
    first_plan, final = schedule[1], trainer.lr_scheduler_configs[0].scheduler.T_max
    assert first_plan < budget.epochs == trainer.current_epoch <= EPOCHS
    # (as above: a run that fell behind a later plan stops without refitting the schedule to where it stopped)
    assert final == budget.epochs or trainer.should_stop
    assert rates == pytest.approx(on_cosine(rates, schedule), rel=1e-6)


def test_a_budget_with_no_room_trains_one_epoch(small_abid, tmp_path):
    budget = TimeBudget(minutes=1e-4)
    trainer, rates, _ = fit(small_abid, tmp_path, budget)
    assert budget.epochs == trainer.current_epoch == 1 and len(rates) == 1


def test_budget_refuses_a_schedule_it_cannot_refit(small_abid, tmp_path):
    step = partial(torch.optim.lr_scheduler.StepLR, step_size=2)
    with pytest.raises(BincountError, match="CosineAnnealingLR"):
        fit(small_abid, tmp_path / "step", TimeBudget(minutes=60), scheduler=step)
    other = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=EPOCHS * 2)
    with pytest.raises(BincountError, match="T_max"):
        fit(small_abid, tmp_path / "tmax", TimeBudget(minutes=60), scheduler=other)
    with pytest.raises(BincountError, match="positive"):
        TimeBudget(minutes=0)


def test_a_plan_lengthens_only_with_room_to_spare():
    # 10 s epochs, 5 done, a plan of 16 in force: shortening needs no spare, lengthening half an epoch of it
    assert epochs_that_fit(5, 26, 16, left_s=105, epoch_s=10) == 15  # 10.5 epochs fit: one fewer at once
    assert epochs_that_fit(5, 26, 16, left_s=115, epoch_s=10) == 16  # 11.5 fit: the plan stands
    assert epochs_that_fit(5, 26, 16, left_s=120 + 10 * LENGTHEN_SPARE - 1, epoch_s=10) == 16  # 12 fit, no spare
    assert epochs_that_fit(5, 26, 16, left_s=120 + 10 * LENGTHEN_SPARE, epoch_s=10) == 17
    # never fewer than done, never more than configured, and all of them where nothing was measured
    assert epochs_that_fit(5, 26, 16, left_s=-50, epoch_s=10) == 5
    assert epochs_that_fit(5, 26, 16, left_s=1e6, epoch_s=10) == 26
    assert epochs_that_fit(0, 26, 26, left_s=100, epoch_s=0) == 26
    # a plan on the edge, the epochs left (left_s / per_epoch_s) around a whole number: without a spare it would
    # flip 16 -> 17 -> 16 -> 17 -> 16, moving the learning rate each time; with one it stands
    edge = [(5, 11.2), (6, 11.1), (7, 9.9), (8, 9.1), (9, 7.9)]
    assert [done + math.floor(epochs) for done, epochs in edge] == [16, 17, 16, 17, 16]
    plans, planned = [], 16
    for done, epochs in edge:
        planned = epochs_that_fit(done, 26, planned, left_s=10 * epochs, epoch_s=10)
        plans.append(planned)
    assert plans == [16] * 5
