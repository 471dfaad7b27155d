"""A checkpoint that would run code when unpickled is refused in one line, without running it, by every
command that takes one: eval.py, train.py ckpt_path= (resume), predict, export and serve."""

import subprocess
import sys

import pytest
import torch

from bincount.cli import main
from bincount.errors import BincountError
from bincount.paths import PROJECT_ROOT
from bincount.training import train
from conftest import TINY, compose_cfg


class _Payload:
    """Unpickling this opens (creates) a file: what a malicious checkpoint would do, made visible."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(counter_ckpt, tmp_path):
    ckpt = torch.load(counter_ckpt, map_location="cpu", weights_only=True)
    marker = tmp_path / "payload-ran"
    ckpt["hyper_parameters"]["extra"] = _Payload(marker)
    path = tmp_path / "run" / "checkpoints" / "evil.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path, marker


REFUSAL = "is not a checkpoint that loads with weights_only=True"


def test_eval_refuses_in_one_line(evil, small_abid, tmp_path):
    path, marker = evil
    r = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"ckpt_path={path}",
            f"data.root={small_abid}",
            f"hydra.run.dir={tmp_path / 'eval'}",
            "data.split=all",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "weights_only=False" not in r.stderr
    assert f"error: ckpt_path: {path} {REFUSAL} (UnpicklingError)" in r.stderr
    assert not marker.exists()


def test_resume_predict_export_and_serve_refuse_the_same_way(evil, small_abid, tmp_path, capsys):
    path, marker = evil
    cfg = compose_cfg("train", TINY + [f"data.root={small_abid}", f"ckpt_path={path}"], tmp_path / "resume")
    with pytest.raises(BincountError, match=f"ckpt_path: .*{REFUSAL}"):
        train(cfg)
    image = next((small_abid / "bin-images").iterdir())
    for argv in (
        ["predict", str(path), str(image)],
        ["export", str(path), "--out", str(tmp_path / "x")],
        ["serve", str(path), "--port", "0"],
    ):
        assert main(argv) == 2
        assert REFUSAL in capsys.readouterr().err
    assert not marker.exists()
