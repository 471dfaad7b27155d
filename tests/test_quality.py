"""Counts a warehouse can trust: calibration (a temperature fitted on validation data, carried into every
consumer), test-time views, the EMA of the weights, the in-memory data path, the record-aware reconcile
decision, and every recipe running a real training step."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel

from bincount.callbacks.ema import debiased_ema
from bincount.data.gpu_augment import eval_batch_transform, geometry
from bincount.data.images import load_rgb
from bincount.data.packed import RowsDataset
from bincount.data.sources import find_images, known_counts
from bincount.data.transforms import eval_transform
from bincount.errors import BincountError
from bincount.inventory import (
    AUDIT,
    MATCH,
    MISMATCH,
    OUTSIDE,
    Expected,
    RecordModel,
    choose_record_threshold,
    decide,
    reconcile,
    summarize,
)
from bincount.model.counter import CountingModel
from bincount.model.views import (
    TTA_VIEWS,
    averaged_logits,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    view,
)
from bincount.paths import PROJECT_ROOT
from bincount.predict import Prediction, predict_images, split_ids
from bincount.serve.predictor import load_predictor
from bincount.training import train
from conftest import CONF_DIR, TINY, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
EMA = ["+callbacks.ema._target_=bincount.callbacks.ema.EMA", "+callbacks.ema.decay=0.9"]


@pytest.fixture(scope="module")
def calibrated_run(small_abid, tmp_path_factory):
    """A real short run on real images with the in-memory path, an EMA and dihedral test-time views."""
    out = tmp_path_factory.mktemp("calibrated")
    cfg = compose_cfg(
        "train",
        TINY
        + [
            f"data.root={small_abid}",
            "trainer.max_epochs=3",
            "data.in_memory=true",
            "model.tta=dihedral",
            "model.label_smoothing=0.0",
            *EMA,
        ],
        out,
    )
    train(cfg)
    return out, json.loads((out / "metrics.json").read_text())


def test_every_run_reports_calibration_and_stores_its_temperature(calibrated_run):
    out, m = calibrated_run
    for key in ("test/ece", "test/ece_uncalibrated", "val/ece", "val/ece_uncalibrated", "test/temperature"):
        assert math.isfinite(m[key]), key
    assert m["test/temperature"] == m["val/temperature"] > 0
    assert sum(b["images"] for b in m["test/reliability"]) == m["test/images"]
    assert (out / "reliability.png").stat().st_size > 5000
    ckpt = torch.load(out / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["temperature"] == pytest.approx(m["test/temperature"])
    assert ckpt["hyper_parameters"]["tta"] == "dihedral"


def test_predictors_apply_the_views_and_the_temperature(calibrated_run, small_abid):
    out, m = calibrated_run
    predictor = load_predictor(out / "checkpoints/best.ckpt")
    assert predictor.temperature == pytest.approx(m["test/temperature"]) and predictor.tta == "dihedral"
    images = sorted((small_abid / "bin-images").glob("*.jpg"))[:6]
    x = torch.stack([predictor.load(p) for p in images])
    with torch.inference_mode():
        raw = [predictor.model(view(x, *v)) for v in TTA_VIEWS["dihedral"]]
    want = F.softmax(torch.stack(raw).mean(0) / predictor.temperature, 1).numpy()
    assert np.allclose(predictor.predict(x), want, atol=1e-5)
    onnx = load_predictor(out / "checkpoints/best.ckpt", backend="onnx")
    assert np.allclose(onnx.predict(x), want, atol=1e-4)


def test_the_temperature_undoes_overconfidence_on_real_logits(calibrated_run, small_abid):
    """Real validation logits made three times too sharp: the fit finds the factor, ECE falls."""
    out, _ = calibrated_run
    predictor = load_predictor(out / "checkpoints/best.ckpt")
    images = sorted((small_abid / "bin-images").glob("*.jpg"))
    counts = {
        p.stem: json.loads((small_abid / "metadata" / f"{p.stem}.json").read_text())["EXPECTED_QUANTITY"]
        for p in images
    }
    logits = torch.from_numpy(predictor.logits([predictor.decode(p) for p in images]) * predictor.temperature)
    labels = torch.tensor([predictor.classes.index(counts[p.stem]) for p in images])
    base = fit_temperature(logits, labels)
    sharp = fit_temperature(logits * 3, labels)
    assert sharp == pytest.approx(3 * base, rel=0.02)
    before = expected_calibration_error((logits * 3).softmax(1), labels)
    after = expected_calibration_error((logits * 3 / sharp).softmax(1), labels)
    assert after < before


def test_ema_weights_are_validated_checkpointed_and_tested(small_abid, tmp_path):
    """Lightning's EMA callback would restore the raw weights when test() loads the best checkpoint."""
    cfg = compose_cfg(
        "train",
        TINY + [f"data.root={small_abid}", "trainer.max_epochs=2", "calibrate=false", "test=false", *EMA],
        tmp_path,
    )
    dm, model = instantiate(cfg.data), instantiate(cfg.model)
    callbacks = [instantiate(c) for name, c in cfg.callbacks.items() if c and "_target_" in c and name != "lr_monitor"]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    trainer.fit(model, datamodule=dm)
    best = trainer.checkpoint_callback.best_model_path
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if k.startswith("model."))
    trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
    state = model.state_dict()
    assert all(torch.equal(state[k], averaged[k]) for k in averaged if k.startswith("model."))


def test_the_average_weighs_every_step_seen_and_not_the_start():
    """The quick start's EMA update is the debiased average it claims to be (the start weighs nothing)."""
    torch.manual_seed(0)
    net = torch.nn.BatchNorm1d(3)  # a float weight and an integer counter (num_batches_tracked)
    average = AveragedModel(net, multi_avg_fn=debiased_ema(0.9), use_buffers=True)
    seen = []
    for _ in range(20):
        with torch.no_grad():
            net.weight.copy_(torch.randn(3))
        net.num_batches_tracked += 1
        seen.append(net.weight.detach().clone())
        average.update_parameters(net)
    k = len(seen)
    want = sum(0.9 ** (k - 1 - i) * w for i, w in enumerate(seen)) / sum(0.9 ** (k - 1 - i) for i in range(k))
    assert torch.allclose(average.module.weight, want, atol=1e-6)
    assert int(average.module.num_batches_tracked) == 20
    with pytest.raises(ValueError, match="decay must be in"):
        debiased_ema(1.0)


def test_in_memory_rows_are_the_jpeg_paths_images(small_abid, tmp_path):
    dm = instantiate(compose_cfg("train", TINY + [f"data.root={small_abid}", "data.in_memory=true"], tmp_path).data)
    dm.setup("fit")
    ds = dm.dataset("test")
    assert isinstance(ds, RowsDataset) and len(ds) == 20
    x, y = ds.__getitems__(list(range(len(ds))))
    got = eval_batch_transform(dm.image_size)(x)
    by_row = {row: rec for rec, row in zip(dm.splits["test"], ds.rows)}
    order = np.sort(ds.rows)
    want = torch.stack([eval_transform(dm.image_size)(load_rgb(by_row[r].image, dm.image_size)) for r in order])
    assert torch.allclose(got, want, atol=1e-5)
    assert sorted(y.tolist()) == sorted(dm.classes.index(r.count) for r in dm.splits["test"])


def test_symmetries_transpose_and_zoom_out_keep_every_pixel_inside():
    x = torch.rand(3, 3, 16, 16) + 0.1  # no black pixel in the input
    n, no, zero = 3, torch.zeros(3, dtype=torch.bool), torch.zeros(3)
    assert torch.equal(geometry(x, zero, no, no, torch.ones(n, dtype=torch.bool)), x.transpose(2, 3))
    for v in TTA_VIEWS["dihedral"]:  # every symmetry is a permutation of the pixels
        assert torch.equal(view(x, *v).flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    zoom = torch.full((n,), 0.5)
    shift = torch.tensor([[0.25, 0.25], [-0.25, 0.0], [0.0, -0.25]])  # as far as the black frame allows
    small = geometry(x, zero, no, no, None, zoom, shift)
    assert torch.equal((small > 0).sum((1, 2, 3)), torch.full((n,), 3 * 8 * 8))  # whole image, a quarter the area


def test_averaged_logits_average_every_view():
    forward = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.rand(2, 3, 8, 8)
    forward(x)
    want = sum(forward(view(x, *v)) for v in TTA_VIEWS["flips"]) / 4
    assert torch.allclose(averaged_logits(forward, x, "flips"), want)
    assert torch.equal(averaged_logits(forward, x, "none"), forward(x))


# -- the record as evidence ---------------------------------------------------------------------------
def _prediction(bin_id, probs, true=None):
    count = max(probs, key=probs.get)
    return Prediction(bin_id, f"{bin_id}.jpg", count, probs[count], probs, true)


def test_a_confident_contradicting_photo_is_flagged_and_a_matching_record_is_verified():
    model = RecordModel(0.2)
    photo = _prediction("a", {1: 0.01, 2: 0.02, 3: 0.05, 4: 0.85, 5: 0.07})
    flagged = decide(photo, Expected(2), 0.95, model)
    assert flagged.decision == MISMATCH and flagged.predicted_count == 4 and flagged.record_probability < 0.3
    agrees = decide(_prediction("b", {1: 0.02, 2: 0.08, 3: 0.7, 4: 0.15, 5: 0.05}), Expected(3), 0.95, model)
    assert agrees.decision == MATCH and agrees.record_probability > 0.95
    # the record is the likeliest count, but the photo leaves too much doubt: a person looks
    unsure = decide(_prediction("c", {1: 0.05, 2: 0.3, 3: 0.35, 4: 0.25, 5: 0.05}), Expected(3), 0.95, model)
    assert unsure.decision == AUDIT and unsure.predicted_count == 3


def test_a_record_the_model_cannot_make_goes_to_a_person_uncorrected():
    photo = _prediction("a", {1: 0.05, 2: 0.05, 3: 0.1, 4: 0.3, 5: 0.5})
    for record in (12, 0):
        for model in (None, RecordModel(0.2)):
            d = decide(photo, Expected(record), 0.5, model)
            assert d.decision == AUDIT and d.reason == OUTSIDE and d.record_probability is None


def _calibrated_set(n, rng, classes=(1, 2, 3, 4, 5)):
    """Predictions of a model calibrated by construction: each true count is drawn from its photo's
    probabilities (which lean towards one count, as a real model's do)."""
    out = []
    for i in range(n):
        centre = rng.integers(len(classes))
        alpha = np.full(len(classes), 0.6)
        alpha[centre] = 3.0
        p = rng.dirichlet(alpha)
        true = classes[rng.choice(len(classes), p=p)]
        out.append(_prediction(str(i), {c: float(q) for c, q in zip(classes, p)}, true))
    return out


def test_auto_verified_records_hold_the_target_precision_on_corrupted_records():
    from benchmarks.quality import corrupt

    rng = np.random.default_rng(0)
    model = RecordModel(0.2)
    val, test = _calibrated_set(3000, rng), _calibrated_set(3000, rng)
    threshold = choose_record_threshold(model, val, 0.95, z=1.645)
    assert 0 < threshold.threshold < 1 and threshold.precision >= 0.95
    records = corrupt([p.true_count for p in test], 0.2, 2, seed=1)
    assert 0.17 < np.mean([r != p.true_count for r, p in zip(records, test)]) < 0.23
    decisions, _ = reconcile(test, {p.id: Expected(r) for p, r in zip(test, records)}, threshold.threshold, model)
    s = summarize(decisions, threshold, {})
    assert s["labelled"]["match_accuracy"] >= 0.94  # the target, up to the test set's own sampling error
    wrong_verified = sum(d.decision == MATCH and d.true_count != d.expected_count for d in decisions)
    assert (
        s["auto_verified"] > 300
        and s["labelled"]["wrong_records_caught"]
        == pytest.approx(1 - wrong_verified / s["labelled"]["wrong_records"], abs=1e-4)
        and wrong_verified < 0.06 * s["auto_verified"]
    )
    assert sum(s["reasons"].values()) == len(decisions) == 3000


def test_the_surest_quarter_is_ranked_by_the_record_probability():
    """The benchmark's ranking figure: records right among the bins the record-aware rule is surest of;
    a record the model cannot make ranks last, whatever its photo."""
    from benchmarks.quality import surest_share_precision

    def leaning(p_record, record):  # the photo's probability on the record, the rest spread evenly
        return {c: p_record if c == record else (1 - p_record) / 4 for c in (1, 2, 3, 4, 5)}

    bins = [  # (probability on the record, record, true count), surest first
        (0.95, 3, 3),
        (0.9, 2, 2),
        (0.85, 4, 5),  # a confident photo agreeing with a wrong record
        (0.4, 1, 1),
        (0.3, 5, 5),
        (0.05, 2, 2),
        (0.99, 12, 5),  # outside the model's counts
        (0.99, 0, 1),
    ]
    predictions = [_prediction(str(i), leaning(q, min(max(r, 1), 5)), t) for i, (q, r, t) in enumerate(bins)]
    records = [r for _, r, _ in bins]
    model = RecordModel(0.2)
    assert surest_share_precision(model, predictions, records, 0.25) == 1.0
    assert surest_share_precision(model, predictions, records, 0.5) == 0.75
    assert surest_share_precision(model, predictions, records, 0.75) == round(5 / 6, 4)
    assert surest_share_precision(model, predictions, records, 0.1) is None


# -- every recipe ------------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_recipe_runs_a_real_training_step(experiment, small_abid, tmp_path):
    """Each recipe as configured (its model, data path, callbacks), shrunk to a few images and one step."""
    cfg = compose_cfg(
        "train",
        [
            f"experiment={experiment}",
            f"data.root={small_abid}",
            "model.pretrained=false",
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.precision=32-true",
            "model.compile=false",
            "debug=fdr",
            "callbacks.rich_progress_bar=null",
        ],
        tmp_path,
    )
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test/images"] == 8 and math.isfinite(m["test/ece"])


def test_auto_precision_asks_the_device_that_trains(tmp_path):
    """``${bincount.auto_precision:${trainer.accelerator}}``: bf16 autocast on a CPU with bf16 instructions, fp32
    on one without (it would emulate bf16, slower than fp32); a GPU recipe on a machine without a GPU asks the CPU."""
    from bincount.monitor.system import cpu_bf16

    cpu = "bf16-mixed" if cpu_bf16() else "32-true"
    for experiment in ("resnet50", "warehouse_gpu", "quickstart"):
        cfg = compose_cfg("train", [f"experiment={experiment}", "trainer.accelerator=cpu"], tmp_path)
        assert cfg.trainer.precision == cpu, experiment
    # the other CPU recipes stay fp32 (measured so); an explicit precision always wins
    assert compose_cfg("train", ["experiment=warehouse"], tmp_path).trainer.precision == "32-true"
    assert (
        compose_cfg("train", ["experiment=quickstart", "trainer.precision=32-true"], tmp_path).trainer.precision
        == "32-true"
    )
    if not torch.cuda.is_available():
        assert compose_cfg("train", ["experiment=resnet50"], tmp_path).trainer.precision == cpu
    # the CPU recipes' pixels follow the precision (fp32 steps are ~3x slower: fewer pixels fit the time budget)
    for precision, size in (("bf16-mixed", 96), ("32-true", 64)):
        for experiment in ("quickstart", "cpu_hour"):
            cfg = compose_cfg("train", [f"experiment={experiment}", f"trainer.precision={precision}"], tmp_path)
            assert cfg.data.image_size == cfg.model.image_size == size, (experiment, precision)
    auto = compose_cfg("train", ["experiment=quickstart"], tmp_path)
    assert auto.data.image_size == (96 if cpu == "bf16-mixed" else 64)
    assert compose_cfg("train", ["experiment=quickstart", "data.image_size=96"], tmp_path).model.image_size == 96


def test_bf16_training_on_the_cpu_keeps_fp32_weights(small_abid, tmp_path):
    """`experiment=quickstart trainer.precision=bf16-mixed` (1.5x faster epochs on a CPU with AMX): the
    checkpoint holds fp32 weights, what export, predict and serve read, and the run's figures are finite."""
    # 10 bins a count: bf16 on a CPU without bf16 instructions is emulated, slow
    overrides = [
        "experiment=quickstart",
        *TINY,
        f"data.root={small_abid}",
        "trainer.max_epochs=1",
        "data.limit_per_class=10",
    ]
    train(compose_cfg("train", [*overrides, "trainer.precision=bf16-mixed"], tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test/images"] == m["data"]["images"]["test"] > 0
    assert math.isfinite(m["test/ece"]) and math.isfinite(m["test/rmse"])
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert {t.dtype for t in state["state_dict"].values() if t.is_floating_point()} == {torch.float32}
    # the test figures are the served model's: bincount predict (fp32, no autocast) on the same test bins
    # gives the same confidences, to fp32 rounding (~1e-8 here; bf16 logits moved them by ~1e-5 after one
    # epoch, more on a trained model)
    wanted = split_ids(ckpt, "test")
    served, skipped = predict_images(
        load_predictor(ckpt),
        [p for p in find_images([str(small_abid)]).images if p.stem in wanted],
        known_counts([str(small_abid)]),
    )
    assert not skipped and len(served) == m["test/images"]
    probabilities = torch.tensor([list(p.probabilities.values()) for p in served])
    labels = torch.tensor([p.classes.index(p.true_count) for p in served])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(m["test/ece"], abs=1e-6)
    ours, reported = reliability_bins(probabilities, labels), m["test/reliability"]
    assert [b["images"] for b in ours] == [b["images"] for b in reported]
    filled = [i for i, b in enumerate(ours) if b["images"]]
    assert [ours[i]["confidence"] for i in filled] == pytest.approx(
        [reported[i]["confidence"] for i in filled], abs=1e-6
    )


def test_quality_benchmark_keeps_the_folders_a_recipe_is_made_of(tmp_path):
    """The benchmark points a recipe reading the default folder at --data, and one naming its own folders
    (cpu_hour: dev-224 and over5-224) at those beside --data: a data.root=DIR for every recipe had trained
    cpu_hour without its 2,341 bins of more than five items."""
    from benchmarks.quality import recipe_data

    data = tmp_path / "abid" / "dev-224"
    assert recipe_data("quickstart", data, []) == ([f"data.root={data}"], [data])
    pointing, roots = recipe_data("cpu_hour", data, [])
    assert pointing == [f"paths.shared_abid={data.parent}"]
    assert roots == [data, data.parent / "over5-224"]
    # the user's own data.root still wins, and is what the reconcile figures read
    mine = tmp_path / "mine"
    assert recipe_data("cpu_hour", data, [f"data.root={mine}"])[1] == [mine]


@pytest.mark.slow  # ~45 s: the benchmark process and two training processes
def test_quality_benchmark_runs_in_smoke_mode(abid, tmp_path):
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "quality",
            "--smoke",
            "--seeds",
            "1,2",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
            str(out),
            "--data",
            str(abid / "dev-224"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = result["recipes"]["quickstart"]["runs"]
    assert [r["seed"] for r in runs] == [1, 2] and result["machine"]["cores"] >= 1
    summary = result["recipes"]["quickstart"]["summary"]
    accs = [r["metrics"]["test/acc"] for r in runs]
    assert summary["test/acc"]["mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    for rule in ("record_aware", "photo_only"):
        assert 0 <= runs[0]["reconcile"][rule]["auto_verified_share"] <= 1
    assert "| quickstart | 1,2 |" in proc.stdout


# -- the ordinal option -------------------------------------------------------------------------------
def test_soft_ordinal_targets_peak_at_the_truth_and_fall_away_with_distance():
    from bincount.model.losses import soft_ordinal_targets

    positions = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 1-5 and "6+" standing for 6
    t = soft_ordinal_targets(torch.tensor([0, 2, 5]), positions, 1.0)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert t.argmax(1).tolist() == [0, 2, 5]
    row = t[1]  # truth 3: symmetric, strictly falling away from it
    assert torch.isclose(row[1], row[3]) and row[2] > row[1] > row[0] > row[5]


def test_the_ordinal_loss_costs_a_near_miss_less_than_a_far_one():
    from bincount.model.losses import count_loss

    positions = torch.arange(1.0, 6.0)
    near, far = torch.full((1, 5), -4.0), torch.full((1, 5), -4.0)
    near[0, 3], far[0, 0] = 4.0, 4.0  # truth 5 (class 4): guessing 4 vs guessing 1
    y = torch.tensor([4])
    assert count_loss(near, y, positions, ordinal_scale=1.0) < count_loss(far, y, positions, ordinal_scale=1.0)
    # plain cross-entropy cannot tell them apart
    assert torch.isclose(count_loss(near, y, positions), count_loss(far, y, positions))


# -- mixup ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer here: only the loss is wanted
def test_mixup_blends_pairs_of_photos_and_their_labels_in_one_share():
    torch.manual_seed(0)
    np.random.seed(0)
    model = CountingModel("resnet10t", image_size=32, mixup_alpha=0.4)
    seen = []
    model.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 4])
    original = x.clone()
    loss = model.training_step((x, y), 0)
    assert torch.equal(x, original)  # the batch itself is left as it was
    blended = seen[-1]
    lam = float(((blended - x.flip(0)) / (x - x.flip(0)))[0, 0, 0, 0])
    assert 0 < lam < 1
    assert torch.allclose(blended, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    with torch.no_grad():
        logits = model.model(blended)
    targets = lam * F.one_hot(y, 5) + (1 - lam) * F.one_hot(y.flip(0), 5)
    expected = torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    model.training_step((x[:5], y[:5]), 0)  # an odd batch has no pairs: trained as it is
    assert torch.equal(seen[-1], x[:5])


def test_mixup_refuses_what_it_cannot_blend():
    with pytest.raises(BincountError, match="ordinal_scale"):
        CountingModel("resnet10t", mixup_alpha=0.2, ordinal_scale=1.0)
    with pytest.raises(BincountError, match="aux_targets"):
        CountingModel("resnet10t", mixup_alpha=0.2, aux_targets=["count"])
    with pytest.raises(BincountError, match=">= 0"):
        CountingModel("resnet10t", mixup_alpha=-1.0)


@pytest.mark.parametrize("setting, value", [("ordinal_scale", 1.0), ("mixup_alpha", 0.2)])
def test_a_run_with_a_loss_setting_trains_and_records_it(setting, value, small_abid, tmp_path):
    cfg = compose_cfg(
        "train", [*TINY, f"data.root={small_abid}", f"model.{setting}={value}", "trainer.max_epochs=2"], tmp_path
    )
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"][setting] == value
    assert math.isfinite(json.loads((tmp_path / "metrics.json").read_text())["test/acc"])
