"""The warehouse's answer set on real ABID images: counts 0-5 exactly and "6+" (the overflow class) for
every bin holding more, learnt from several folders (dev-224 and over5-224), with its metrics, the
warehouse experiments, and eval on the full-resolution originals of raw/ leaving out training bins."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bincount.config import check_config
from bincount.counts import CountClasses
from bincount.data.datamodule import BinDataModule
from bincount.data.packed import pack_abid
from bincount.data.records import read_abid, read_abid_folders
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from bincount.model.metrics import CountMetrics
from bincount.training import SEEN_IN_TRAINING, evaluate, train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice

WAREHOUSE = CountClasses([0, 1, 2, 3, 4, 5], overflow=True)
OVER = (6, 7, 8, 9, 12, 20)  # counts of the over5-224 bins taken


@pytest.fixture(scope="module")
def over5(abid):
    root = abid / "over5-224"
    if not (root / "metadata").is_dir():
        pytest.skip(f"over5-224 not found in {abid}")
    return root


@pytest.fixture(scope="module")
def folders(dev224, over5, tmp_path_factory):
    """Two ABID-layout folders of real images: 8 bins of each count 0-5 from dev-224, and 8 of each of
    6 counts above five from over5-224 (48 bins, all in the overflow class)."""
    base = tmp_path_factory.mktemp("warehouse")
    dev = make_abid_slice(dev224, base / "dev", ids_by_count(dev224, 8, counts=(0, 1, 2, 3, 4, 5)))
    big = make_abid_slice(over5, base / "over5", ids_by_count(over5, 8, counts=OVER))
    return dev, big


def true_counts(root):
    return {mf.stem: json.loads(mf.read_text())["EXPECTED_QUANTITY"] for mf in (root / "metadata").glob("*.json")}


# -- labels ---------------------------------------------------------------------------------------------
def test_overflow_labels_every_bin_above_five_from_real_over5_bins(folders):
    _, big = folders
    counts = true_counts(big)
    assert min(counts.values()) >= 6 and max(counts.values()) >= 20
    records, report = read_abid(big, WAREHOUSE)
    assert len(records) == 48 and report.total == 0
    # without the overflow class they are all left out, with the reason
    kept, skipped = read_abid(big, [0, 1, 2, 3, 4, 5])
    assert kept == [] and skipped.summary() == {"count not in classes": 48}
    dm = BinDataModule([str(f) for f in folders], classes=[0, 1, 2, 3, 4, 5], overflow=True, image_size=32)
    dm.setup()
    ds = dm.dataset("train")
    assert ds.labels == [6 if r.count > 5 else r.count for r in ds.records]
    assert set(ds.labels) == {0, 1, 2, 3, 4, 5, 6}
    first_big = next(i for i, r in enumerate(ds.records) if r.count > 5)
    assert ds[first_big][1] == 6 and ds[0][1] == ds.records[0].count  # what a loader gets


def test_in_memory_and_packed_rows_carry_the_overflow_class(folders, tmp_path):
    dev, big = folders
    dm = BinDataModule([str(dev), str(big)], classes=[0, 1, 2, 3, 4, 5], overflow=True, image_size=32, in_memory=True)
    dm.setup()
    rows = dm.dataset("train")
    _, y = rows.__getitems__(list(range(len(rows))))
    want = [WAREHOUSE.index(r.count) for r in dm.splits["train"]]
    assert y.tolist() == want and y.max().item() == 6
    packed = pack_abid(big, tmp_path / "packed", 32)  # every count: the classes filter at read time
    pm = BinDataModule(str(packed), classes=[0, 1, 2, 3, 4, 5], overflow=True, image_size=32, split="all")
    pm.setup()
    ds = pm.dataset("test")
    assert len(ds) == 48 and set(ds.labels.tolist()) == {6}
    off = BinDataModule(str(packed), classes=[0, 1, 2, 3, 4, 5], image_size=32, split="all")
    with pytest.raises(BincountError, match="no usable labelled images"):
        off.setup()


def test_split_and_data_report_are_per_class_with_the_overflow_class_named(folders, tmp_path):
    dm = BinDataModule([str(f) for f in folders], classes=[0, 1, 2, 3, 4, 5], overflow=True, output_dir=str(tmp_path))
    dm.setup()
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["class_names"] == ["0", "1", "2", "3", "4", "5", "6+"] and report["overflow"] is True
    # stratified per class: the 48 overflow bins split as one class (38/5/5), each exact count 6/1/1
    assert report["per_class"]["train"] == {"0": 6, "1": 6, "2": 6, "3": 6, "4": 6, "5": 6, "6+": 38}
    assert report["per_class"]["test"]["6+"] == 5 and report["per_class"]["val"]["6+"] == 5
    assert report["images_per_root"] == {str(folders[0]): 48, str(folders[1]): 48}
    assert report["root"] == [str(f) for f in folders] and report["skipped"]["total"] == 0
    with (tmp_path / "split_manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    big = true_counts(folders[1])
    # the manifest keeps each bin's true count, so a relabelled bin is still noticed when it is reloaded
    assert {r["id"]: int(r["label"]) for r in rows if r["id"] in big} == big
    again = BinDataModule(
        [str(f) for f in folders],
        classes=[0, 1, 2, 3, 4, 5],
        overflow=True,
        manifest=str(tmp_path / "split_manifest.csv"),
    )
    again.setup()
    assert {s: sorted(r.id for r in again.splits[s]) for s in again.splits} == {
        s: sorted(r.id for r in dm.splits[s]) for s in dm.splits
    }
    # without the overflow class the second folder's bins are left out and reported
    plain = BinDataModule([str(f) for f in folders], classes=[0, 1, 2, 3, 4, 5])
    plain.setup()
    assert plain.data_summary()["skipped"]["by_reason"] == {"count not in classes": 48}
    assert plain.data_summary()["images_per_root"][str(folders[1])] == 0


# -- several folders ----------------------------------------------------------------------------------
def test_an_id_in_two_folders_is_an_error_naming_it_and_both_folders(dev224, folders, tmp_path):
    dev, big = folders
    twin = sorted(true_counts(dev))[:2]
    other = make_abid_slice(dev224, tmp_path / "copy", twin)
    with pytest.raises(BincountError, match=re.escape(f"{twin[0]}, {twin[1]} in both {dev} and {other}")):
        read_abid_folders([dev, big, other], WAREHOUSE)
    dm = BinDataModule([str(dev), str(other)], classes=[0, 1, 2, 3, 4, 5], overflow=True)
    with pytest.raises(BincountError, match=f"data.root: the same bin id in two folders.*{twin[0]}"):
        dm.setup()
    # a bin the classes leave out still counts as found in its folder
    with pytest.raises(BincountError, match=twin[0]):
        read_abid_folders([dev, other], [5])


def test_one_folder_stays_one_string(folders):
    dev, _ = folders
    dm = BinDataModule(str(dev), classes=[1, 2, 3, 4, 5], image_size=32)
    dm.setup()
    summary = dm.data_summary()
    assert summary["root"] == str(dev) and summary["class_names"] == ["1", "2", "3", "4", "5"]
    assert summary["skipped"]["by_reason"] == {"count not in classes": 8}  # the empty bins
    with pytest.raises(BincountError, match="data.root is empty"):
        BinDataModule([])


# -- metrics -------------------------------------------------------------------------------------------
def _metrics(pairs, counts=WAREHOUSE):
    """CountMetrics over (true class, predicted class) pairs, fed as logits the way the model does."""
    m = CountMetrics(counts)
    y = torch.tensor([t for t, _ in pairs])
    logits = torch.nn.functional.one_hot(torch.tensor([p for _, p in pairs]), counts.num_classes).float()
    m.update(logits.argmax(1), y)
    return {k: v.tolist() if v.ndim else v.item() for k, v in m.compute().items()}


def test_overflow_and_empty_precision_recall_and_exact_only_rmse():
    pairs = (
        [(6, 6)] * 8  # overflow right
        + [(6, 5)] * 2  # overflow missed (a bin of many called 5)
        + [(4, 6)] * 1  # 4 called overflow
        + [(0, 0)] * 3  # empty right
        + [(0, 1)] * 1  # empty missed
        + [(2, 0)] * 1  # 2 called empty
        + [(3, 3)] * 4
        + [(3, 5)] * 2
    )
    v = _metrics(pairs)
    assert v["overflow_precision"] == pytest.approx(8 / 9) and v["overflow_recall"] == pytest.approx(8 / 10)
    assert v["empty_precision"] == pytest.approx(3 / 4) and v["empty_recall"] == pytest.approx(3 / 4)
    # exact-only: the 11 pairs with an overflow side are not in RMSE/MAE
    exact = [(t, p) for t, p in pairs if t < 6 and p < 6]
    err = np.array([t - p for t, p in exact], dtype=float)  # classes 0-5 are counts 0-5
    assert v["exact_bins"] == len(exact) == 11
    assert v["rmse"] == pytest.approx(math.sqrt((err**2).mean()))
    assert v["mae"] == pytest.approx(np.abs(err).mean())
    assert v["off_by_one"] == pytest.approx((np.abs(err) <= 1).mean())
    assert v["acc"] == pytest.approx(15 / 22)
    # the 12 bins of an exact true count, 7 right (the 4 called overflow is wrong): what a 0-5 model would score
    assert v["acc_exact"] == pytest.approx(7 / 12)
    assert len(v["confusion"]) == 7 and v["confusion"][6] == [0, 0, 0, 0, 0, 2, 8]
    assert v["acc_per_class"][6] == pytest.approx(0.8)


def test_a_model_without_overflow_or_empty_class_reports_neither():
    v = _metrics([(0, 0), (1, 2), (4, 4)], CountClasses([1, 2, 3, 4, 5]))
    assert not any(k.startswith(("overflow", "empty", "acc_exact")) for k in v)
    assert v["exact_bins"] == 3 and v["rmse"] == pytest.approx(math.sqrt(1 / 3))
    never = _metrics([(0, 0), (1, 1)])  # no overflow bin and none predicted: undefined, not 0 or 1
    assert math.isnan(never["overflow_precision"]) and math.isnan(never["overflow_recall"])


def test_the_model_has_one_logit_more_and_calibrates_with_it():
    from bincount.model.views import fit_temperature

    model = CountingModel("resnet10t", classes=[0, 1, 2, 3, 4, 5], overflow=True, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.predict_counts(torch.tensor([[0, 0, 0, 0, 0, 0, 9.0], [9.0, 0, 0, 0, 0, 0, 0]])).tolist() == [6, 0]
    ordinal = CountingModel("resnet10t", classes=[0, 1, 2, 3, 4, 5], overflow=True, count_loss_weight=0.5)
    assert ordinal.count_values.tolist() == [0, 1, 2, 3, 4, 5, 6]  # "6+" stands for at least 6
    with pytest.warns(UserWarning, match="self.log"):  # no trainer here: only the loss is wanted
        loss = ordinal.training_step((torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 6, 6])), 0)
    assert torch.isfinite(loss) and loss > 0
    logits = torch.randn(64, 7) * 3
    labels = logits.argmax(1)  # confident and right: the fitted temperature sharpens (below one)
    assert fit_temperature(logits, labels) < 1


# -- the experiments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["warehouse", "warehouse_gpu"])
def test_warehouse_experiments_compose_on_the_two_shared_folders(experiment, abid, tmp_path):
    cfg = compose_cfg("train", [f"experiment={experiment}", "model.pretrained=false"], tmp_path)
    check_config(cfg)
    assert [Path(r).resolve() for r in cfg.data.root] == [(abid / d).resolve() for d in ("dev-224", "over5-224")]
    assert list(cfg.data.classes) == [0, 1, 2, 3, 4, 5] and cfg.data.overflow and cfg.model.overflow
    model = instantiate(cfg.model)
    assert model.counts == WAREHOUSE and model.model.get_classifier().out_features == 7
    if experiment == "warehouse":  # the 2-core CPU recipe: the quick start's, at no more compute in all
        quick = compose_cfg("train", ["experiment=quickstart"], tmp_path)
        recipe = (
            "model.backbone",
            "model.tta",
            "model.label_smoothing",
            "model.optimizer",
            "model.scheduler._target_",
            "data.batch_size",
            "data.in_memory",
            "trainer.accelerator",
        )
        assert {k: OmegaConf.select(cfg, k) for k in recipe} == {k: OmegaConf.select(quick, k) for k in recipe}
        # ~1.5x the quick start's training images (empty and 6+ bins added): images x epochs x pixels, the
        # compute of a from-scratch run, at most the quick start's (96 px measured worse there, and 14.9 min)
        seen = [c.trainer.max_epochs * c.data.image_size**2 for c in (cfg, quick)]
        assert seen[0] * 1.5 <= seen[1]
    else:
        assert (cfg.model.backbone, cfg.data.image_size, cfg.trainer.accelerator) == ("resnet50", 224, "auto")
    other = compose_cfg("train", [f"experiment={experiment}", "data.root=[/a,/b]"], tmp_path)
    assert list(other.data.root) == ["/a", "/b"]


def test_quickstart_and_the_mission_recipe_keep_the_capstone_counts(tmp_path):
    for experiment in ("quickstart", "resnet50"):
        cfg = compose_cfg("train", [f"experiment={experiment}"], tmp_path)
        assert list(cfg.data.classes) == [1, 2, 3, 4, 5] and cfg.data.overflow is False and cfg.model.overflow is False


@pytest.fixture(scope="module")
def warehouse_run(folders, tmp_path_factory):
    """A tiny smoke run of the warehouse experiment on the two real folders (1 epoch of resnet10t at 32 px)."""
    out = tmp_path_factory.mktemp("warehouse-run")
    roots = ",".join(str(f) for f in folders)
    cfg = compose_cfg("train", ["experiment=warehouse", *TINY, f"data.root=[{roots}]", "trainer.max_epochs=1"], out)
    train(cfg)
    return out


def test_a_warehouse_run_writes_the_overflow_and_empty_figures(warehouse_run):
    m = json.loads((warehouse_run / "metrics.json").read_text())
    for key in (
        "test/overflow_precision",
        "test/overflow_recall",
        "test/empty_precision",
        "test/empty_recall",
        "test/exact_bins",
        "val/temperature_fitted",
    ):
        assert key in m, key
    assert m["class_names"] == ["0", "1", "2", "3", "4", "5", "6+"] and m["overflow"] is True
    assert "both exact counts" in m["notes"]["test/rmse, test/mae, test/off_by_one"]
    assert set(m["test/acc_per_class"]) == set(m["class_names"])
    assert len(m["test/confusion"]) == 7 and m["test/images"] == 11  # one bin per count 0-5, five overflow
    confusion = np.array(m["test/confusion"])
    assert confusion[6].sum() == 5 and m["test/exact_bins"] == confusion[:6, :6].sum()
    recall = m["test/overflow_recall"]
    assert recall == pytest.approx(confusion[6, 6] / 5)
    # accuracy over the six bins of an exact true count, a bin called 6+ among them wrong
    assert m["test/acc_exact"] == pytest.approx(np.trace(confusion[:6, :6]) / 6)
    assert m["data"]["per_class"]["test"]["6+"] == 5
    assert (warehouse_run / "confusion_matrix.png").is_file() and (warehouse_run / "reliability.png").is_file()
    ckpt = torch.load(warehouse_run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["overflow"] is True and ckpt["hyper_parameters"]["classes"] == [0, 1, 2, 3, 4, 5]


# -- eval on raw/ ---------------------------------------------------------------------------------------
def test_eval_on_raw_originals_leaves_out_the_bins_it_trained_on(warehouse_run, folders, abid, tmp_path):
    with (warehouse_run / "split_manifest.csv").open() as f:
        seen = {r["id"] for r in csv.DictReader(f) if r["split"] != "test"}
    raw_counts = true_counts(abid / "raw")
    trained = sorted(i for i in seen if i in raw_counts)[:3]  # raw originals of bins the run trained on
    assert trained, "the dev-224 slice should share ids with raw/"
    used = set(true_counts(folders[0])) | set(true_counts(folders[1]))
    fresh = [min(i for i, c in raw_counts.items() if c == count and i not in used) for count in (0, 3, 7, 12, 25)]
    raw = make_abid_slice(abid / "raw", tmp_path / "raw", trained + fresh)
    ckpt = warehouse_run / "checkpoints" / "best.ckpt"
    got = evaluate(
        compose_cfg("eval", [*TINY, f"ckpt_path={ckpt}", f"data.root={raw}", "data.split=all"], tmp_path / "eval")
    )
    assert got["excluded_overlap_with_training"] == len(trained) and got["overlap_with_training"] == 0
    assert got["test/images"] == len(fresh)  # every count has a class: 0, 3, and "6+" for 7, 12 and 25
    assert np.array(got["test/confusion"])[6].sum() == 3 and np.array(got["test/confusion"])[0].sum() == 1
    assert got["data"]["skipped"]["ids"][SEEN_IN_TRAINING] == sorted(trained)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["excluded_overlap_with_training"] == len(trained)
    kept = evaluate(
        compose_cfg(
            "eval",
            [*TINY, f"ckpt_path={ckpt}", f"data.root={raw}", "data.split=all", "exclude_training_ids=false"],
            tmp_path / "kept",
        )
    )
    assert kept["test/images"] == len(trained) + len(fresh)
    assert kept["overlap_with_training"] == len(trained) and kept["excluded_overlap_with_training"] == 0


def test_scan_reads_several_folders_with_the_overflow_class(folders, capsys):
    from bincount.cli import main

    assert main(["scan", *map(str, folders), "--classes", "0..5", "--overflow", "--no-check"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 96 and out["skipped"] == {}
    assert out["per_class"] == {"0": 8, "1": 8, "2": 8, "3": 8, "4": 8, "5": 8, "6+": 48}
    assert main(["scan", *map(str, folders), "--classes", "0..5", "--no-check"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == {"count not in classes": 48}
    assert main(["scan", str(folders[0]), "--overflow"]) != 0
    assert "--overflow needs --classes" in capsys.readouterr().err
