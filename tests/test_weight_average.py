"""The moving average of the weights the quick start trains with: its update is the debiased EMA it claims to
be, and a real run validates, checkpoints, calibrates and tests the average."""

import json

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from bincount.callbacks.ema import debiased_ema
from bincount.training import evaluate, train
from conftest import TINY, compose_cfg


def test_the_average_weighs_every_step_seen_and_not_the_start():
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


def test_an_average_of_the_weights_is_what_the_checkpoint_holds_and_what_was_tested(small_abid, tmp_path):
    """With an exponential moving average of the weights (the quick start's) best.ckpt holds the averaged
    weights, and the calibration and test after fit use those: eval of best.ckpt gives the same probabilities
    (ECE) and counts. Lightning's own callback would restore, when the test loads best.ckpt, the un-averaged
    weights it also keeps there, and test those."""
    out = tmp_path / "run"
    ema = ["callbacks.weight_averaging={_target_:bincount.callbacks.ema.EMA,decay:0.9}"]
    train(compose_cfg("train", TINY + [f"data.root={small_abid}", "trainer.max_epochs=2", *ema], out))
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged if averaged[k].is_floating_point())

    got = evaluate(
        compose_cfg("eval", TINY + [f"ckpt_path={out}/checkpoints/best.ckpt", f"data.root={small_abid}"], tmp_path)
    )
    want = json.loads((out / "metrics.json").read_text())
    assert got["test/confusion"] == want["test/confusion"]
    assert got["test/ece_uncalibrated"] == pytest.approx(want["test/ece_uncalibrated"], abs=1e-6)
    assert got["test/ece"] == pytest.approx(want["test/ece"], abs=1e-6)
