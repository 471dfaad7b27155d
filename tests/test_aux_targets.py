"""Auxiliary targets from the bins' metadata (``data.aux_targets``, bincount.data.aux_targets), on real ABID bins:
the values each bin's metadata gives, the training batches that carry them, a network that learns them beside
the count and answers, serves and exports only the count."""

import json
import math

import numpy as np
import pytest
import torch

from bincount.counts import CountClasses
from bincount.data.aux_targets import aux_matrix
from bincount.data.datamodule import BinDataModule
from bincount.data.records import BinRecord, read_abid
from bincount.data.sources import find_images, known_counts
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from bincount.predict import predict_images, split_ids
from bincount.serve.export import export_model
from bincount.serve.predictor import load_predictor
from bincount.training import evaluate, train
from conftest import TINY, compose_cfg

AUX = ["count", "skus", "volume"]


def test_targets_are_the_metadata_standardised(dev_and_over5):
    records = [r for f in dev_and_over5 for r in read_abid(f, check_images=False)[0]]
    aux = aux_matrix(records, AUX)
    raw = {
        "count": [r.count for r in records],
        "skus": [len(r.skus) for r in records],
        # no volume where a product lacks its dimensions
        "volume": [
            None if any(s.dims_in is None for s in r.skus) else sum(s.quantity * math.prod(s.dims_in) for s in r.skus)
            for r in records
        ],
    }
    assert aux.shape == (len(records), 3)
    for j, name in enumerate(AUX):
        known = np.array([v is not None for v in raw[name]])
        assert np.array_equal(~np.isnan(aux[:, j]), known), name
        column, values = aux[known, j], [v for v in raw[name] if v is not None]
        assert abs(column.mean()) < 1e-5 and abs(column.std() - 1) < 1e-4
        # each column orders the bins as their metadata does: exact counts (15 above 6), distinct SKUs, volume
        order = np.argsort(values, kind="stable")
        assert np.all(np.diff(column[order]) >= -1e-6), name
        assert len(set(np.round(column, 5))) == len(set(values))
    assert max(raw["count"]) == 15 and len(set(raw["skus"])) > 2
    assert np.isnan(aux[:, 2]).sum() < len(records) / 4  # most bins' products have dimensions


def test_a_bin_without_metadata_is_left_out_of_that_target_and_a_target_nobody_has_is_refused():
    records = [BinRecord(f"{i}", f"/x/{i}.jpg", 1 + i % 5) for i in range(10)]  # counts only, as a packed folder
    aux = aux_matrix(records, ["count"])
    assert not np.isnan(aux).any()
    with pytest.raises(BincountError, match="'skus' is known for 0 of 10.*packed"):
        aux_matrix(records, ["count", "skus"])
    with pytest.raises(BincountError, match="each target once"):
        aux_matrix(records, ["count", "weight"])


def test_training_batches_carry_the_targets_and_evaluation_batches_do_not(dev_and_over5, tmp_path):
    module = BinDataModule(
        [str(f) for f in dev_and_over5], learn_overflow=True, image_size=32, batch_size=8, in_memory=True,
        num_workers=0, output_dir=str(tmp_path), aux_targets=AUX,
    )  # fmt: skip
    module.setup()
    x, y, aux = next(iter(module.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,) and aux.shape == (8, 3) and aux.dtype == torch.float32
    expected = aux_matrix(module.splits["train"], AUX)

    def row_set(rows):  # NaN (a product without dimensions) as a value that compares equal to itself
        return {tuple(np.round(np.nan_to_num(r, nan=99.0), 5)) for r in rows}

    for _ in range(3):  # a few shuffled batches, so bins with an unknown volume come up too
        x, y, aux = next(iter(module.train_dataloader()))
        assert row_set(aux.numpy()) <= row_set(expected)
    assert len(next(iter(module.val_dataloader()))) == 2


def test_the_network_has_an_output_per_target_and_answers_only_the_counts():
    model = CountingModel("resnet10t", learn_overflow=True, image_size=32, aux_targets=AUX)
    assert model.model.get_classifier().out_features == 6 + 3
    x = torch.randn(4, 3, 32, 32)
    assert model(x).shape == (4, 5) and model(x, all_training_classes=True).shape == (4, 9)
    with pytest.raises(BincountError, match="set data.aux_targets"):
        model.training_step((x, torch.zeros(4, dtype=torch.long)), 0)
    with pytest.raises(BincountError, match="each target once"):
        CountingModel("resnet10t", aux_targets=["skus", "skus"])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer here: only the loss is wanted
def test_the_targets_move_the_loss_and_their_outputs_learn():
    torch.manual_seed(0)
    model = CountingModel("resnet10t", image_size=32, aux_targets=["count"], aux_weight=1.0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    aux = torch.tensor([[-1.0], [-0.5], [0.0], [0.5], [1.0], [float("nan")]])  # the last bin's target unknown
    with_aux = model.training_step((x, y, aux), 0)
    model.hparams.aux_weight = 0.0
    without = model.training_step((x, y, aux), 0)
    assert with_aux > without  # the auxiliary term is added, and finite despite the unknown target
    model.hparams.aux_weight = 1.0
    with_aux.backward()
    grad = model.model.get_classifier().weight.grad
    assert grad[5].abs().sum() > 0  # the auxiliary output's row learns
    model.zero_grad()
    model.training_step((x, y, torch.full((6, 1), float("nan"))), 0).backward()  # no target known at all
    assert model.model.get_classifier().weight.grad[5].abs().sum() == 0


@pytest.fixture(scope="module")
def run(dev_and_over5, tmp_path_factory):
    """A tiny cpu_hour run (its recipe at 32 px, one epoch) with every auxiliary target."""
    out = tmp_path_factory.mktemp("aux-run")
    roots = ",".join(str(f) for f in dev_and_over5)
    overrides = [f"data.root=[{roots}]", "trainer.max_epochs=1", f"data.aux_targets=[{','.join(AUX)}]"]
    cfg = compose_cfg("train", ["experiment=cpu_hour", *TINY, *overrides], out)
    assert list(cfg.model.aux_targets) == AUX
    train(cfg)
    return out


def test_a_run_learns_the_targets_and_serves_exports_and_evaluates_only_the_counts(run, dev_and_over5, tmp_path):
    dev, _ = dev_and_over5
    logged = next(run.glob("csv/*/metrics.csv")).read_text().splitlines()[0].split(",")
    assert "train/aux_loss" in logged
    ckpt = run / "checkpoints/best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["aux_targets"] == AUX
    assert state["state_dict"]["model.fc.weight"].shape[0] == 6 + 3  # kept whole for resuming
    predictor = load_predictor(ckpt)
    assert predictor.counts == CountClasses([1, 2, 3, 4, 5]) and predictor.model.get_classifier().out_features == 5
    test_ids = split_ids(ckpt, "test")
    images = [p for p in find_images([str(dev)]).images if p.stem in test_ids]
    predictions, _ = predict_images(predictor, images, known_counts([str(dev)]))
    served = np.array([[p.probabilities[n] for n in predictor.counts.names] for p in predictions])
    model = CountingModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        expected = model.calibrated_logits(torch.stack([predictor.load(p) for p in images])).softmax(1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    export_model(ckpt, tmp_path / "export")
    assert "aux_targets" not in json.loads((tmp_path / "export" / "bincount.json").read_text())
    roots = ",".join(str(f) for f in dev_and_over5)
    cfg = compose_cfg("eval", [f"ckpt_path={ckpt}", *TINY, f"data.root=[{roots}]"], run / "eval")
    results = evaluate(cfg)
    assert results["test/acc"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test/acc"])
