"""A 1-5 counter that still learns from the bins above five (``data.learn_overflow``, experiment=cpu_hour), on
real ABID images: those bins are one more class of the training split only, validation and test stay the very
bins of the same counts without them, and what is evaluated, served and exported answers only 1-5."""

import json

import numpy as np
import pytest
import torch

from bincount.counts import CountClasses
from bincount.data.datamodule import BinDataModule
from bincount.data.records import BinRecord
from bincount.data.sources import find_images, known_counts
from bincount.data.split import split_records
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from bincount.predict import predict_images, split_ids
from bincount.serve.export import export_model
from bincount.serve.predictor import load_predictor
from bincount.training import evaluate, train
from conftest import TINY, compose_cfg

CAPSTONE = CountClasses([1, 2, 3, 4, 5])


def _ids(records):
    return sorted(r.id for r in records)


def test_bins_above_five_join_training_only_and_leave_validation_and_test_as_they_were(dev_and_over5, tmp_path):
    dev, big = dev_and_over5
    kw = {"root": [str(dev), str(big)], "image_size": 32, "check_images": False}
    plain = BinDataModule(**kw, output_dir=str(tmp_path / "plain"))
    learning = BinDataModule(**kw, learn_overflow=True, output_dir=str(tmp_path / "learn"))
    plain.setup()
    learning.setup()
    for split in ("val", "test"):
        assert _ids(learning.splits[split]) == _ids(plain.splits[split]) and learning.splits[split]
    extra = [r for r in learning.splits["train"] if r.count > 5]
    assert len(extra) == 24 and _ids(learning.splits["train"]) == sorted(_ids(plain.splits["train"]) + _ids(extra))
    assert learning.counts == CAPSTONE  # what the model answers
    labels = learning.dataset("train").labels
    by_id = {r.id: label for r, label in zip(learning.splits["train"], labels)}
    assert {by_id[r.id] for r in extra} == {5}  # one training-only class, after the five answered
    report = json.loads((tmp_path / "learn" / "data_report.json").read_text())
    assert report["learn_overflow"] is True and report["class_names"] == ["1", "2", "3", "4", "5"]
    assert report["per_class"]["train"]["6+"] == 24
    assert report["per_class"]["val"]["6+"] == report["per_class"]["test"]["6+"] == 0
    # the plain module left the 24 bins out, each with its reason
    assert plain.report is not None and sum(len(v) for v in plain.report.skipped.values()) >= 24


def test_learning_the_overflow_it_answers_or_evaluating_everything_is_refused(dev_and_over5):
    dev, big = dev_and_over5
    with pytest.raises(BincountError, match="already answered"):
        BinDataModule([str(dev), str(big)], classes=[0, 1, 2, 3, 4, 5], overflow=True, learn_overflow=True)
    module = BinDataModule([str(dev), str(big)], learn_overflow=True, split="all", check_images=False)
    with pytest.raises(BincountError, match="split=all"):
        module.setup()
    with pytest.raises(BincountError, match="already answered"):
        CountingModel("resnet10t", classes=[1, 2, 3, 4, 5], overflow=True, learn_overflow=True)


def test_a_training_only_class_does_not_move_or_cap_the_others():
    records = [BinRecord(f"{i:05d}", f"/x/{i}.jpg", 1 + i % 5) for i in range(100)]
    records += [BinRecord(f"{i:05d}", f"/x/{i}.jpg", 6 + i % 3) for i in range(100, 130)]

    def class_of(r):
        return min(r.count, 6) - 1

    for strategy in ("stratified", "balanced"):
        without = split_records(records[:100], strategy, class_of=class_of)
        with_extra = split_records(records, strategy, class_of=class_of, train_only=[5])
        assert _ids(with_extra["val"]) == _ids(without["val"]) and _ids(with_extra["test"]) == _ids(without["test"])
        extra = [r for r in with_extra["train"] if r.count > 5]
        assert _ids([r for r in with_extra["train"] if r.count <= 5]) == _ids(without["train"])
        # balanced: the training-only class is capped like the others, at the smallest answered class (20)
        assert len(extra) == (30 if strategy == "stratified" else 20)


def test_the_network_learns_six_logits_and_answers_five():
    model = CountingModel("resnet10t", classes=[1, 2, 3, 4, 5], learn_overflow=True, image_size=32)
    x = torch.randn(4, 3, 32, 32)
    assert model.model.get_classifier().out_features == 6
    assert model(x, all_training_classes=True).shape == (4, 6) and model(x).shape == (4, 5)
    assert torch.equal(model(x), model(x, all_training_classes=True)[:, :5])
    assert model.counts == CAPSTONE and model.training_counts.names[-1] == "6+"


@pytest.fixture(scope="module")
def run(dev_and_over5, tmp_path_factory):
    """A tiny cpu_hour run (its recipe at 32 px, one epoch) on the two real dev_and_over5."""
    out = tmp_path_factory.mktemp("cpu-hour-run")
    roots = ",".join(str(f) for f in dev_and_over5)
    cfg = compose_cfg("train", ["experiment=cpu_hour", *TINY, f"data.root=[{roots}]", "trainer.max_epochs=1"], out)
    assert cfg.data.learn_overflow and cfg.model.learn_overflow and not cfg.model.overflow
    train(cfg)
    return out


def test_a_run_trains_on_the_big_bins_and_tests_only_the_counts_it_answers(run, dev_and_over5):
    m = json.loads((run / "metrics.json").read_text())
    assert m["class_names"] == ["1", "2", "3", "4", "5"] and m["overflow"] is False
    assert m["test/images"] == 5 and len(m["test/confusion"]) == 5  # one dev bin of each count, no big bin
    assert m["data"]["per_class"]["train"]["6+"] == 24
    ckpt = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["learn_overflow"] is True
    assert ckpt["state_dict"]["model.fc.weight"].shape[0] == 6  # the training-only logit is kept for resuming
    # training logs its accuracy per class it labels, 6+ included; validation only the five it answers
    logged = next(run.glob("csv/*/metrics.csv")).read_text().splitlines()[0].split(",")
    assert "train/acc_count_6plus" in logged and "train/acc_count_5" in logged
    assert "val/acc_count_5" in logged and "val/acc_count_6plus" not in logged


def test_served_and_exported_models_answer_only_the_five_counts_as_evaluated(run, dev_and_over5, tmp_path):
    dev, _ = dev_and_over5
    ckpt = run / "checkpoints/best.ckpt"
    predictor = load_predictor(ckpt)
    assert predictor.counts == CAPSTONE and predictor.model.get_classifier().out_features == 5
    test_ids = split_ids(ckpt, "test")
    images = [p for p in find_images([str(dev)]).images if p.stem in test_ids]
    predictions, _ = predict_images(predictor, images, known_counts([str(dev)]))
    served = np.array([[p.probabilities[n] for n in CAPSTONE.names] for p in predictions])
    # the same probabilities as the Lightning module's forward (the first five logits of six), calibrated
    model = CountingModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        expected = model.calibrated_logits(torch.stack([predictor.load(p) for p in images])).softmax(1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    written = export_model(ckpt, tmp_path / "export", onnx=True, parity_images=[str(dev)])
    assert written["parity"]["same_counts"]
    for backend in ("torch", "onnx"):
        exported = load_predictor(tmp_path / "export", backend)
        assert exported.predict([exported.load(p) for p in images[:2]]).shape == (2, 5)
    assert "learn_overflow" not in json.loads((tmp_path / "export" / "bincount.json").read_text())


def test_eval_of_the_run_reproduces_its_test_split(run, dev_and_over5):
    roots = ",".join(str(f) for f in dev_and_over5)
    cfg = compose_cfg(
        "eval", [f"ckpt_path={run / 'checkpoints/best.ckpt'}", *TINY, f"data.root=[{roots}]"], run / "eval"
    )
    results = evaluate(cfg)
    trained = json.loads((run / "metrics.json").read_text())
    assert results["test/images"] == trained["test/images"] == 5
    assert results["test/acc"] == pytest.approx(trained["test/acc"])
