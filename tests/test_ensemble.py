"""An ensemble (``model.members=K``): each member learns on its own loss, evaluation and serving use the
mean of their logits, and the whole chain (checkpoint, test figures, export, ONNX, weights files) carries it."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError
from bincount.model.counter import CountingModel
from bincount.model.network import Ensemble, build_backbone, build_network
from bincount.model.views import averaged_logits
from bincount.serve.export import export_model
from bincount.serve.predictor import TorchPredictor, load_predictor
from conftest import ids_by_count


@pytest.fixture(scope="module")
def ensemble_run(small_abid, tmp_path_factory):
    """A 2-member tiny counter trained 2 epochs and tested on real images (the test results kept)."""
    run = tmp_path_factory.mktemp("ensemble-run")
    L.seed_everything(0, workers=True)
    dm = BinDataModule(str(small_abid), image_size=32, batch_size=32, num_workers=0, output_dir=str(run))
    model = CountingModel(backbone="resnet10t", members=2, image_size=32, tta="hflip", label_smoothing=0.1)
    start = [m.fc.weight.detach().clone() for m in model.model.members]
    ckpt = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val/acc", mode="max")
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)
    return model, start, run / "checkpoints" / "best.ckpt", dm


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # the step alone, without a Trainer
def test_each_member_learns_on_its_own_loss():
    torch.manual_seed(0)
    model = CountingModel(backbone="resnet10t", members=2, image_size=32, label_smoothing=0.1)
    x = torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % 5
    model.training_step((x, y), 0).backward()
    together = [p.grad.clone() for p in model.model.members[1].parameters()]
    # member 1 alone, its loss halved (the ensemble's loss is the mean of the members'): the same gradient,
    # so nothing of member 0 leaks into it (a loss on the mean logits would couple them)
    model.zero_grad()
    alone = torch.nn.functional.cross_entropy(model.model.members[1](x), y, label_smoothing=0.1) / 2
    alone.backward()
    for a, b in zip(together, model.model.members[1].parameters(), strict=True):
        torch.testing.assert_close(a, b.grad)


def test_an_ensemble_trains_every_member_and_is_evaluated_as_their_mean(ensemble_run, small_abid):
    model, start, _, dm = ensemble_run
    members = model.model.members
    assert len(members) == 2
    for m, w in zip(members, start, strict=True):
        assert not torch.equal(m.fc.weight, w)  # both trained
    assert not torch.equal(members[0].fc.weight, members[1].fc.weight)  # from different initialisations
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), (members[0](x) + members[1](x)) / 2)
    results = model.test_results
    accs = results["test/acc_members"]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    n = len(dm.test_dataloader().dataset)
    assert results["test/images"] == n > 0  # every test image counted once
    # each member's accuracy is its own: recomputed on the test split with the same views
    hits = [0, 0]
    with torch.no_grad():
        for xb, yb in dm.test_dataloader():
            for i, m in enumerate(members):
                hits[i] += int((averaged_logits(m, xb, "hflip").argmax(1) == yb).sum())
    assert accs == pytest.approx([h / n for h in hits])


def test_the_checkpoint_serves_and_exports_as_an_ensemble(ensemble_run, dev224, tmp_path):
    model, _, ckpt, _ = ensemble_run
    images = [dev224 / "bin-images" / f"{i}.jpg" for i in ids_by_count(dev224, 2)]
    torch_predictor = load_predictor(ckpt, "torch")
    assert isinstance(torch_predictor.model, Ensemble)
    x = torch.stack([torch_predictor.load(p) for p in images])
    served = torch_predictor.predict(x)
    best = CountingModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        want = best.calibrated_logits(x).softmax(1).numpy()
    np.testing.assert_allclose(served, want, atol=1e-5)
    out = tmp_path / "model"
    written = export_model(ckpt, out, onnx=True, parity_images=[str(p) for p in images])
    assert json.loads((out / "bincount.json").read_text())["members"] == 2
    assert written["parity"]["same_counts"] and written["parity"]["max_abs_logit_diff"] < 1e-4
    np.testing.assert_allclose(load_predictor(out, "onnx").predict(x), served, atol=1e-5)


def test_weights_the_members_do_not_fit_are_a_clear_error(ensemble_run, tmp_path):
    _, _, ckpt, _ = ensemble_run
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]

    single = build_backbone("resnet10t", 5).state_dict()
    with pytest.raises(BincountError, match="2 x resnet10t"):
        TorchPredictor(dict(hparams), single)


def test_a_weights_file_starts_every_member(tmp_path):
    src = build_backbone("resnet10t", num_classes=1000)
    torch.nn.init.constant_(src.conv1[0].weight, 0.125)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    model = CountingModel("resnet10t", members=3, weights=str(tmp_path / "w.safetensors"))
    assert all(torch.all(m.conv1[0].weight == 0.125) for m in model.model.members)


@pytest.mark.parametrize("members", [0, -1])
def test_members_below_one_are_refused(members):
    with pytest.raises(BincountError, match="model.members"):
        build_network("resnet10t", 5, members)
