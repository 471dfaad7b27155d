import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bincount.errors import BincountError
from bincount.model.counter import CountingModel, build_backbone
from bincount.model.metrics import CountMetrics


def test_head_is_sized_to_the_classes():
    model = CountingModel("resnet10t", classes=[0, 1, 2, 3, 4, 5])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    assert model.predict_counts(torch.tensor([[0, 0, 0, 9.0, 0, 0]])).tolist() == [3]


def test_count_metrics_match_a_hand_computation():
    classes = [1, 2, 3, 4, 5]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    p = np.clip(y + rng.integers(-2, 3, 200), 0, 4)
    m = CountMetrics(classes)
    m.update(torch.tensor(p[:120]), torch.tensor(y[:120]))
    m.update(torch.tensor(p[120:]), torch.tensor(y[120:]))
    v = m.compute()
    counts_p, counts_y = np.array(classes)[p], np.array(classes)[y]
    assert v["acc"].item() == pytest.approx((p == y).mean())
    assert v["rmse"].item() == pytest.approx(np.sqrt(((counts_p - counts_y) ** 2).mean()), rel=1e-5)
    assert v["mae"].item() == pytest.approx(np.abs(counts_p - counts_y).mean(), rel=1e-5)
    assert v["off_by_one"].item() == pytest.approx((np.abs(p - y) <= 1).mean())
    for c in range(5):
        assert v["acc_per_class"][c].item() == pytest.approx((p[y == c] == c).mean())
    conf = v["confusion"].numpy()
    assert conf.sum() == 200 and conf[2, 3] == ((y == 2) & (p == 3)).sum()


def test_local_weights_file_loads_backbone_and_leaves_other_head(tmp_path):
    src = build_backbone("resnet10t", num_classes=1000)
    torch.nn.init.constant_(src.conv1[0].weight, 0.125)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        model = CountingModel("resnet10t", classes=[1, 2, 3, 4, 5], weights=str(tmp_path / f))
        assert torch.all(model.model.conv1[0].weight == 0.125)
        assert model.model.fc.out_features == 5  # the 1000-class head did not fit and was left out


def test_weights_file_for_another_model_is_refused(tmp_path):
    torch.save({"nothing.like.this": torch.zeros(3)}, tmp_path / "w.pth")
    with pytest.raises(BincountError, match="no tensor"):
        CountingModel("resnet10t", weights=str(tmp_path / "w.pth"))
    with pytest.raises(BincountError, match="no such file"):
        CountingModel("resnet10t", weights=str(tmp_path / "missing.pth"))


def test_pretrained_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: without this the hub goes to the network and waits
    # out its timeouts (~45 s here) before failing
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BincountError, match="needs internet.*model.weights=PATH"):
        build_backbone("resnet10t", 5, pretrained=True)


def test_unknown_backbone_names_the_key():
    with pytest.raises(BincountError, match="model.backbone"):
        build_backbone("resnet5000", 5)
