"""Progressive resizing (``data.progressive``): the size schedule, its errors, a real run on real bins whose
training batches grow by epoch while evaluation stays at the full size, and the time budget's plan for it."""

import lightning as L
import pytest
import torch

from bincount.callbacks.time_budget import epochs_that_fit
from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from helpers.trainers import quiet_trainer


def test_the_size_schedule_grows_from_the_small_size_to_the_full_one():
    dm = BinDataModule("unused", image_size=80, progressive={"from_size": 48, "ramp": [0.3, 0.85]})
    sizes = [dm.train_size(e, 17) for e in range(17)]
    # 30 % of 16 steps: epochs 0-4 at 48 px; 85 %: epochs 14-16 at 80 px; in between steps of 8 px, never smaller
    assert sizes[:5] == [48] * 5 and sizes[14:] == [80] * 3
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert set(sizes) == {48, 56, 64, 72, 80} and all(s % 8 == 0 for s in sizes)
    # the schedule follows the epochs in force (the time budget changes them): fewer epochs, the same shape
    assert [dm.train_size(e, 5) for e in range(5)] == [48, 48, 56, 72, 80]
    # without it, every epoch at the full size
    assert BinDataModule("unused", image_size=80).train_size(0, 17) == 80


@pytest.mark.parametrize(
    "setting",
    [
        {"from_size": 96, "ramp": [0.3, 0.85]},  # not smaller than image_size
        {"from_size": 4},  # too small to mean anything
        {"from_size": 48, "ramp": [0.9, 0.2]},  # the ramp ends before it starts
        {"from_size": 48, "ramp": [0.2]},
        {"from_size": 48, "size": 64},  # an unknown key
        {"ramp": [0.2, 0.8]},
    ],
)
def test_a_wrong_setting_is_a_clear_error(setting):
    with pytest.raises(BincountError, match=r"data\.progressive: expected"):
        BinDataModule("unused", image_size=80, progressive=setting)


def test_the_jpeg_path_refuses_it(small_abid, tmp_path):
    dm = BinDataModule(str(small_abid), image_size=32, progressive={"from_size": 16}, output_dir=str(tmp_path))
    with pytest.raises(BincountError, match="in_memory=true"):
        dm.setup("fit")


class InputSizes(L.Callback):
    """The side of every batch the network sees, by stage and epoch."""

    def __init__(self):
        self.seen: dict[tuple[str, int], set[int]] = {}

    def setup(self, trainer, pl_module, stage):
        def record(module, args):
            stage = "train" if trainer.training else "eval"
            self.seen.setdefault((stage, trainer.current_epoch), set()).add(args[0].shape[-1])

        pl_module.model.register_forward_pre_hook(record)


def test_a_real_run_trains_small_then_full_and_evaluates_full(small_abid, tmp_path):
    L.seed_everything(0, workers=True)
    dm = BinDataModule(
        str(small_abid),
        image_size=32,
        batch_size=32,
        num_workers=0,
        in_memory=True,
        progressive={"from_size": 16, "ramp": [0.0, 1.0]},
        output_dir=str(tmp_path),
    )
    model = CountingModel(backbone="resnet10t", image_size=32)
    sizes = InputSizes()
    trainer = quiet_trainer(3, [sizes], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert {e: sizes.seen[("train", e)] for e in range(3)} == {0: {16}, 1: {24}, 2: {32}}
    assert {s for (stage, _), seen in sizes.seen.items() if stage == "eval" for s in seen} == {32}
    trainer.test(model, datamodule=dm)
    assert sizes.seen[("eval", trainer.current_epoch)] == {32}
    # the model is what the full size serves: its image size, the data's
    assert model.hparams.image_size == 32 and torch.isfinite(next(model.parameters())).all()


def test_the_budget_plans_epochs_by_their_pixels():
    # epochs of 10 s at the full size, validation 1 s; a schedule from half the side (a quarter of the pixels)
    dm = BinDataModule("unused", image_size=64, progressive={"from_size": 32, "ramp": [0.5, 0.5]})

    def seconds(epoch, epochs):
        return 10 * (dm.train_size(epoch, epochs) / 64) ** 2 + 1

    # 60 s left after epoch 0 of 26: at the full size 5 more epochs fit (6 in all); with the first half of a run's
    # epochs at a quarter of the pixels, 7 more (3 small, 4 full: 54.5 s; 9 in all would need 65.5 s)
    assert epochs_that_fit(1, 26, 26, 60, 11.0) == 6
    fits = epochs_that_fit(1, 26, 26, 60, seconds)
    assert fits == 8
    assert sum(seconds(e, fits) for e in range(1, fits)) <= 60 < sum(seconds(e, fits + 1) for e in range(1, fits + 1))
