"""Export a trained counter for serving: safetensors weights + a small JSON of hyper-parameters (an
endpoint never unpickles), an ONNX graph checked against PyTorch, and the SageMaker ``model.tar.gz``.

``bincount export RUN/checkpoints/best.ckpt --out model/ --onnx --sagemaker`` writes::

    model/bincount.json        backbone, classes, overflow, image_size: what a predictor needs to rebuild
                               the model (``overflow``: whether it has the "more than K" class)
    model/model.safetensors    the backbone's weights
    model/model.onnx           the same network for ONNX Runtime (--onnx): one logit per class, so K + 2 with
                               counts 0..K and the overflow class; with parity.json
    model/model.tar.gz         all of the above + code/ (handler, bincount package) for SageMaker (--sagemaker)
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import torch

from bincount.data.sources import find_images
from bincount.errors import BincountError
from bincount.serve.predictor import (
    HPARAMS_NAME,
    ONNX_NAME,
    WEIGHTS_NAME,
    OnnxPredictor,
    TorchPredictor,
    export_onnx,
    load_predictor,
)

__all__ = ["export_model", "export_onnx", "parity", "write_model_tar"]

log = logging.getLogger(__name__)

TAR_NAME = "model.tar.gz"
PARITY_NAME = "parity.json"
# What the SageMaker PyTorch container installs before importing code/inference.py.
ENDPOINT_REQUIREMENTS = ["timm>=1.0", "safetensors>=0.4", "rich>=13"]
ENTRY_POINT = "inference.py"
ENTRY_SOURCE = (
    '"""SageMaker entry point: bincount\'s handler functions."""\n'
    "from bincount.serve.handler import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n"
)


def parity(reference: TorchPredictor, candidate: OnnxPredictor, batch: torch.Tensor) -> dict:
    """How far ONNX Runtime's logits are from PyTorch's on the same preprocessed batch."""
    a, b = reference.logits(batch), candidate.logits(batch)
    same = a.argmax(1) == b.argmax(1)
    return {
        "images": int(batch.shape[0]),
        "classes": reference.counts.names,
        "max_abs_logit_diff": float(np.abs(a - b).max()),
        "same_counts": bool(same.all()),
        "count_disagreements": int((~same).sum()),
    }


def export_model(
    model: str | Path,
    out: str | Path,
    onnx: bool = False,
    parity_images: list[str] | None = None,
    sagemaker: bool = False,
    parity_tolerance: float = 1e-4,
) -> dict:
    """Write the served form of a checkpoint (or re-export a folder) into ``out``; return what was written."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(model, "torch")
    assert isinstance(predictor, TorchPredictor)
    save_file({k: v.contiguous() for k, v in predictor.model.state_dict().items()}, str(out / WEIGHTS_NAME))
    (out / HPARAMS_NAME).write_text(json.dumps(predictor.hparams, indent=2))
    written: dict = {"folder": str(out), "files": [WEIGHTS_NAME, HPARAMS_NAME]}
    if onnx:
        onnx_path = export_onnx(predictor, out / ONNX_NAME)
        if parity_images:
            batch = torch.stack([predictor.load(p) for p in find_images(parity_images).images[:64]])
        else:
            log.warning("no --parity-images: checking ONNX parity on random inputs, not real images")
            batch = torch.randn(
                8, 3, predictor.image_size, predictor.image_size, generator=torch.Generator().manual_seed(0)
            )
        check = parity(predictor, OnnxPredictor(predictor.hparams, onnx_path), batch)
        check["inputs"] = "images" if parity_images else "random"
        (out / PARITY_NAME).write_text(json.dumps(check, indent=2))
        written["files"] += [ONNX_NAME, PARITY_NAME]
        written["parity"] = check
        if check["max_abs_logit_diff"] > parity_tolerance or not check["same_counts"]:
            raise BincountError(
                f"ONNX export of {model} disagrees with PyTorch (max logit difference "
                f"{check['max_abs_logit_diff']:.2e}, {check['count_disagreements']} different counts); "
                "serve it with --backend torch"
            )
    if sagemaker:
        written["tarball"] = str(write_model_tar(out, out / TAR_NAME))
    return written


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_model_tar(folder: Path, tar_path: Path) -> Path:
    """The SageMaker model artifact: the exported files at the top, and ``code/`` with the entry point,
    its requirements and the bincount package, which the PyTorch inference container puts on its path."""
    import bincount

    package = Path(bincount.__file__).parent
    requirements = ENDPOINT_REQUIREMENTS + (["onnxruntime>=1.18"] if (folder / ONNX_NAME).is_file() else [])
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in (HPARAMS_NAME, WEIGHTS_NAME, ONNX_NAME):
            if (folder / name).is_file():
                tar.add(folder / name, arcname=name)
        _add_bytes(tar, f"code/{ENTRY_POINT}", ENTRY_SOURCE.encode())
        _add_bytes(tar, "code/requirements.txt", "\n".join(requirements).encode() + b"\n")
        tar.add(package, arcname="code/bincount", filter=lambda i: None if "__pycache__" in i.name else i)
    return tar_path
