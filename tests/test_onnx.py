"""ONNX export and the ONNX Runtime backend: parity with PyTorch on real dev-224 images (logits within
1e-4, identical counts), at the checkpoint's size and at the mission's 224 px; the exported folder and
the SageMaker tarball load and serve on their own."""

import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import timm
import torch

from bincount.errors import BincountError
from bincount.serve.export import export_model, export_onnx
from bincount.serve.predictor import OnnxPredictor, TorchPredictor, load_predictor
from conftest import ids_by_count

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def real_images(dev224):
    return [dev224 / "bin-images" / f"{i}.jpg" for i in ids_by_count(dev224, 4)]  # 20 images, counts 1-5


def assert_parity(reference, candidate, images):
    x = torch.stack([reference.load(p) for p in images])
    a, b = reference.logits(x), candidate.logits(x)
    assert np.abs(a - b).max() < 1e-4
    assert reference.describe(reference.predict(x)) == candidate.describe(candidate.predict(x))


def test_onnx_backend_matches_pytorch_on_real_images(counter_ckpt, real_images):
    assert_parity(load_predictor(counter_ckpt, "torch"), load_predictor(counter_ckpt, "onnx"), real_images)


def test_parity_at_the_mission_image_size(tmp_path, real_images):
    """A 224 px network (resnet10t here, for speed) exported and run on real 224x224 images."""
    torch.manual_seed(0)
    hparams = {"backbone": "resnet10t", "classes": [1, 2, 3, 4, 5], "image_size": 224}
    state = timm.create_model("resnet10t", num_classes=5).state_dict()
    reference = TorchPredictor(hparams, state)
    candidate = OnnxPredictor(hparams, export_onnx(reference, tmp_path / "m.onnx"))
    assert_parity(reference, candidate, real_images)


def test_export_writes_a_self_describing_folder(counter_ckpt, tmp_path, real_images, dev224):
    out = tmp_path / "model"
    written = export_model(counter_ckpt, out, onnx=True, parity_images=[str(p) for p in real_images], sagemaker=True)
    for name in ("bincount.json", "model.safetensors", "model.onnx", "parity.json", "model.tar.gz"):
        assert (out / name).is_file(), name
    hparams = json.loads((out / "bincount.json").read_text())
    ckpt_hparams = torch.load(counter_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams == {
        "backbone": "resnet10t",
        "classes": [1, 2, 3, 4, 5],
        "overflow": False,
        "image_size": 32,
        "channels_last": False,
        "tta": ckpt_hparams["tta"],
        "temperature": ckpt_hparams["temperature"],
    }
    check = json.loads((out / "parity.json").read_text())
    assert check["images"] == len(real_images) and check["inputs"] == "images"
    assert check["max_abs_logit_diff"] < 1e-4 and check["same_counts"] and written["parity"] == check
    # the folder serves on either backend, with the checkpoint's own predictions
    x = torch.stack([load_predictor(counter_ckpt).load(p) for p in real_images])
    want = load_predictor(counter_ckpt).predict(x)
    np.testing.assert_allclose(load_predictor(out, "torch").predict(x), want, atol=1e-6)
    np.testing.assert_allclose(load_predictor(out, "onnx").predict(x), want, atol=1e-5)
    np.testing.assert_allclose(load_predictor(out / "model.onnx", "onnx").predict(x), want, atol=1e-5)


def test_the_sagemaker_tarball_runs_on_its_own_code(counter_ckpt, tmp_path, real_images):
    """Unpacked as the PyTorch container does (/opt/ml/model, code/ on the path), the entry point loads
    the model with the bincount copy inside the tarball and answers a real image."""
    out = tmp_path / "model"
    export_model(counter_ckpt, out, sagemaker=True)
    opt_ml_model = tmp_path / "opt-ml-model"
    with tarfile.open(out / "model.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(opt_ml_model, filter="data")
    assert {
        "bincount.json",
        "model.safetensors",
        "code/inference.py",
        "code/requirements.txt",
        "code/bincount/serve/handler.py",
    } <= set(names)
    assert not any("__pycache__" in n for n in names)
    script = (
        "import os, sys, json; sys.path.insert(0, os.path.abspath('code'))\n"
        "import inference, bincount\n"
        "assert bincount.__file__.startswith(sys.path[0]), bincount.__file__\n"
        "model = inference.model_fn('.')\n"
        f"data = inference.input_fn(open({str(real_images[0])!r}, 'rb').read(), 'image/jpeg')\n"
        "print(inference.output_fn(inference.predict_fn(data, model), 'application/json')[0])\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=opt_ml_model, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])["predictions"][0]
    direct = load_predictor(counter_ckpt)
    assert got["count"] == direct.describe(direct.predict([direct.load(real_images[0])]))[0]["count"]


def test_backbone_kwargs_travel_with_the_weights(tmp_path, real_images):
    """A network built with more of timm's arguments (output_stride 16: the last stage dilated, the same
    weights) is rebuilt so by the checkpoint's predictor, the exported folder and its ONNX graph; built without
    them, the same weights give other logits."""
    from bincount.model.counter import CountingModel
    from helpers.counters import save_checkpoint

    torch.manual_seed(0)
    model = CountingModel(backbone="resnet10t", backbone_kwargs={"output_stride": 16}, image_size=64).eval()
    ckpt = save_checkpoint(model, tmp_path / "os16.ckpt")
    predictor = load_predictor(ckpt)
    x = torch.stack([predictor.load(p) for p in real_images])
    assert predictor.model.forward_features(x[:1]).shape[-1] == 4  # 64 px / 16, where the default net has 2
    with torch.no_grad():
        np.testing.assert_allclose(predictor.logits(x), model(x).numpy(), atol=1e-5)
    plain = TorchPredictor({**predictor.hparams, "backbone_kwargs": {}}, model.model.state_dict())
    assert np.abs(plain.logits(x) - predictor.logits(x)).max() > 1e-3
    out = tmp_path / "model"
    export_model(ckpt, out, onnx=True)
    assert json.loads((out / "bincount.json").read_text())["backbone_kwargs"] == {"output_stride": 16}
    np.testing.assert_allclose(load_predictor(out, "torch").logits(x), predictor.logits(x), atol=1e-6)
    np.testing.assert_allclose(load_predictor(out, "onnx").logits(x), predictor.logits(x), atol=1e-4)


def test_backbone_kwargs_the_architecture_does_not_take_are_refused():
    from bincount.model.counter import CountingModel

    with pytest.raises(BincountError, match=r"backbone_kwargs=\{'no_such_argument': 1\}: resnet10t does not take"):
        CountingModel(backbone="resnet10t", backbone_kwargs={"no_such_argument": 1})


# -- a model with the overflow class ----------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_images(abid, dev224):
    """Real photos of bins of 0-5 items and of 6-20 items."""
    over5 = abid / "over5-224"
    return [dev224 / "bin-images" / f"{i}.jpg" for i in ids_by_count(dev224, 2, (0, 1, 2, 3, 4, 5))] + [
        over5 / "bin-images" / f"{i}.jpg" for i in ids_by_count(over5, 3, (6, 12, 20))
    ]


def test_an_overflow_model_exports_k_plus_2_outputs_and_onnx_agrees(mixed_images, tmp_path, monkeypatch):
    import onnx

    from bincount.serve import handler
    from helpers.counters import mixed_counter

    ckpt = mixed_counter(tmp_path / "m.ckpt", mixed_images)
    out = tmp_path / "model"
    written = export_model(ckpt, out, onnx=True, parity_images=[str(p) for p in mixed_images])
    hparams = json.loads((out / "bincount.json").read_text())
    assert hparams["classes"] == [0, 1, 2, 3, 4, 5] and hparams["overflow"] is True
    graph = onnx.load(str(out / "model.onnx")).graph
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7  # 0..5 and "6+": K + 2
    assert written["parity"]["same_counts"] and written["parity"]["classes"][-1] == "6+"
    torch_model, onnx_model = load_predictor(ckpt), load_predictor(out, "onnx")
    assert isinstance(onnx_model, OnnxPredictor) and onnx_model.counts == torch_model.counts
    x = torch.stack([torch_model.load(p) for p in mixed_images])
    assert_parity(torch_model, onnx_model, mixed_images)
    answers = onnx_model.describe(onnx_model.predict(x))
    assert {"at_least": 6} in answers and any("count" in a for a in answers)
    # the SageMaker handler on the exported folder, ONNX backend, answers the same
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    model = handler.model_fn(str(out))
    assert model.backend == "onnx"
    data = handler.input_fn(json.dumps({"images": [b64(p) for p in mixed_images]}), "application/json")
    body, _ = handler.output_fn(handler.predict_fn(data, model), "application/json")
    got = json.loads(body)["predictions"]
    assert [{k: a[k] for k in ("count", "at_least") if k in a} for a in got] == answers
    assert all(list(a["probabilities"])[-1] == "6+" for a in got)


def b64(path):
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_a_checkpoint_older_than_the_overflow_class_exports_as_a_1_to_5_model(counter_ckpt, tmp_path, real_images):
    ckpt = torch.load(counter_ckpt, map_location="cpu", weights_only=True)
    old = {"state_dict": ckpt["state_dict"], "hyper_parameters": dict(ckpt["hyper_parameters"])}
    del old["hyper_parameters"]["overflow"]
    torch.save(old, tmp_path / "old.ckpt")
    out = tmp_path / "model"
    export_model(tmp_path / "old.ckpt", out, onnx=True)
    assert json.loads((out / "bincount.json").read_text())["overflow"] is False
    x = torch.stack([load_predictor(counter_ckpt).load(p) for p in real_images])
    want = load_predictor(counter_ckpt).predict(x)
    assert want.shape[1] == 5
    np.testing.assert_allclose(load_predictor(out, "onnx").predict(x), want, atol=1e-5)
    # an export folder older than the overflow class (no "overflow" in bincount.json) serves as before
    hparams = json.loads((out / "bincount.json").read_text())
    (out / "bincount.json").write_text(json.dumps({k: v for k, v in hparams.items() if k != "overflow"}))
    for backend in ("torch", "onnx"):
        old_folder = load_predictor(out, backend)
        assert old_folder.counts.names == ["1", "2", "3", "4", "5"]
        np.testing.assert_allclose(old_folder.predict(x), want, atol=1e-5)
    # a 5-output graph beside a bincount.json that claims the overflow class: refused, not misread
    (out / "bincount.json").write_text(json.dumps(hparams | {"classes": [0, 1, 2, 3, 4], "overflow": True}))
    with pytest.raises(BincountError, match="has 5 outputs but its bincount.json describes 6 classes"):
        load_predictor(out, "onnx")
    with pytest.raises(BincountError, match="do not fit"):
        load_predictor(out, "torch")
