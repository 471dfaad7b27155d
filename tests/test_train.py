"""A short real training run on real images, then eval reproducing its test metrics and
evaluating a folder the model has never seen."""

import json

import pytest
import torch

from bincount.training import evaluate, train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice


@pytest.fixture(scope="module")
def trained_run(small_abid, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg("train", TINY + [f"data.root={small_abid}", "trainer.max_epochs=2"], out)
    score = train(cfg)
    return out, score


def test_training_writes_every_output(trained_run):
    out, score = trained_run
    for name in (
        "metrics.json",
        "checkpoints/best.ckpt",
        "split_manifest.csv",
        "data_report.json",
        "curves.png",
        "confusion_matrix.png",
        "history.json",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test/acc", "test/rmse", "test/mae", "test/acc_per_class"):
        assert key in m
    assert set(m["test/acc_per_class"]) == {"1", "2", "3", "4", "5"}
    assert m["test/images"] == 20  # 10% of 40 per class
    assert 0 <= m["test/acc"] <= 1 and m["test/rmse"] >= m["test/mae"] >= 0
    assert score == pytest.approx(m["best_val"]["val/acc"])
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert all("train/loss" in h and "val/acc" in h for h in history)
    ckpt = torch.load(out / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["classes"] == [1, 2, 3, 4, 5]


def test_eval_reproduces_the_test_metrics(trained_run, small_abid, tmp_path):
    out, _ = trained_run
    cfg = compose_cfg("eval", TINY + [f"ckpt_path={out}/checkpoints/best.ckpt", f"data.root={small_abid}"], tmp_path)
    got = evaluate(cfg)
    want = json.loads((out / "metrics.json").read_text())
    assert got["test/images"] == want["test/images"]
    assert got["test/confusion"] == want["test/confusion"]
    assert got["test/acc"] == pytest.approx(want["test/acc"])
    assert got["test/rmse"] == pytest.approx(want["test/rmse"])
    assert got["overlap_with_training"] == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == pytest.approx(want["test/acc"])


def test_eval_on_an_unseen_folder_with_split_all(trained_run, abid, tmp_path):
    out, _ = trained_run
    raw = make_abid_slice(abid / "raw", tmp_path / "raw", ids_by_count(abid / "raw", 4))
    cfg = compose_cfg(
        "eval",
        TINY + [f"ckpt_path={out}/checkpoints/best.ckpt", f"data.root={raw}", "data.split=all"],
        tmp_path / "eval",
    )
    got = evaluate(cfg)
    # raw/ shares ids with dev-224: the bins the run trained or validated on are left out by default
    with (out / "split_manifest.csv").open() as f:
        seen = {line.split(",")[0] for line in f if not line.rstrip().endswith(",test")}
    overlap = len({p.stem for p in (raw / "bin-images").iterdir()} & seen)
    assert got["excluded_overlap_with_training"] == overlap and got["overlap_with_training"] == 0
    assert got["test/images"] == 20 - overlap
    assert sum(map(sum, got["test/confusion"])) == 20 - overlap
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
