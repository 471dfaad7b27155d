"""Predictors: a trained counter behind one small API, on PyTorch or ONNX Runtime.

``load_predictor(path, backend)`` takes a Lightning checkpoint, an exported model folder (see
``bincount.serve.export``) or an ``.onnx`` file, and returns an object whose ``predict(images)``
gives class probabilities, one column per class of ``counts`` (a ``CountClasses``: the exact counts,
then "more than K" when the model has that class), and ``describe(probabilities)`` the answers
(``{"count": c}`` or ``{"at_least": K + 1}``). Preprocessing is the evaluation transform of training, so a served
model sees exactly what ``eval.py`` showed it. Weights load with ``weights_only=True`` or from
safetensors: nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bincount.counts import CountClasses
from bincount.data.images import load_rgb, to_rgb
from bincount.data.transforms import eval_transform
from bincount.errors import BincountError
from bincount.model.checkpoint import load_checkpoint
from bincount.model.views import averaged_logits, check_tta

log = logging.getLogger(__name__)

HPARAMS_NAME = "bincount.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
OPSET = 17
BACKENDS = ("torch", "onnx")
# What a served model needs to rebuild itself; the rest of a checkpoint's hyper-parameters is training.
SERVED_HPARAMS = (
    "backbone",
    "backbone_kwargs",
    "classes",
    "overflow",
    "image_size",
    "channels_last",
    "tta",
    "temperature",
)


class Predictor(ABC):
    """Images in, class probabilities out. Thread-safe: one forward pass at a time, since each pass
    already uses every core."""

    backend = ""

    def __init__(self, hparams: dict):
        # the answer set: exact counts, plus "more than K" when the model has the overflow class
        # (a checkpoint or an export older than that class has no ``overflow``: exact counts only)
        self.counts = CountClasses.from_hparams(hparams)
        served = {**hparams, **self.counts.hparams()}  # ``overflow`` written out, older files included
        # (``backbone_kwargs`` only where it says something: a default network's files stay as they were)
        self.hparams = {k: served[k] for k in SERVED_HPARAMS if k in served and (k != "backbone_kwargs" or served[k])}
        self.classes = list(self.counts.exact)  # the exact counts; ``counts.names`` names every class
        self.image_size = int(hparams["image_size"])
        # test-time views and the calibration temperature, as evaluation applied them
        self.tta = check_tta(hparams.get("tta", "none"))
        self.temperature = float(hparams.get("temperature", 1.0))
        self.transform = eval_transform(self.image_size)
        self._lock = threading.Lock()

    # -- preprocessing ----------------------------------------------------------------------
    def decode(self, source: str | Path | bytes) -> Image.Image:
        """Decode one image (a path or encoded bytes) as the data module does (``load_rgb``: RGB, upright,
        DCT-scaled for JPEGs); ``ImageError`` says why one cannot be used."""
        return load_rgb(io.BytesIO(source) if isinstance(source, bytes) else source, self.image_size)

    def load(self, source: str | Path | bytes) -> torch.Tensor:
        """Decode one image and preprocess it as evaluation does."""
        return self.transform(self.decode(source))

    def batch(self, images: Sequence[Image.Image | torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return images if images.ndim == 4 else images.unsqueeze(0)
        return torch.stack([im if isinstance(im, torch.Tensor) else self.transform(to_rgb(im)) for im in images])

    # -- inference --------------------------------------------------------------------------
    @abstractmethod
    def _logits(self, x: torch.Tensor) -> np.ndarray:
        """Logits of a preprocessed batch, on this backend."""

    def logits(self, images) -> np.ndarray:
        """Calibrated logits: averaged over the model's test-time views, divided by its temperature."""
        x = self.batch(images)
        if x.shape[0] == 0:
            return np.zeros((0, self.counts.num_classes), dtype=np.float32)
        with self._lock:
            return averaged_logits(self._logits, x, self.tta) / np.float32(self.temperature)

    def predict(self, images) -> np.ndarray:
        """Probabilities, shape (images, classes), for PIL images, preprocessed tensors or a batch tensor."""
        return softmax(self.logits(images))

    def indices(self, probabilities: np.ndarray) -> list[int]:
        """The predicted class of each image, an index into ``counts.names``."""
        return [int(i) for i in probabilities.argmax(1)]

    def describe(self, probabilities: np.ndarray) -> list[dict[str, int]]:
        """Each image's answer as users see it: ``{"count": c}``, or ``{"at_least": K + 1}`` for the
        overflow class (``CountClasses.describe``): never a number the model did not mean."""
        return [self.counts.describe(i) for i in self.indices(probabilities)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class TorchPredictor(Predictor):
    backend = "torch"

    def __init__(self, hparams: dict, state_dict: dict[str, torch.Tensor]):
        super().__init__(hparams)
        import timm  # with bincount.model.backbone, not CountingModel: an endpoint container needs no Lightning

        from bincount.model.backbone import build_backbone

        if not timm.is_model(hparams["backbone"]):
            raise BincountError(
                f"backbone {hparams['backbone']!r} is not in this timm ({timm.__version__}); upgrade timm"
            )
        # as training built it, with the architecture's own arguments (output_stride...: the same weights, another net)
        self.model = build_backbone(
            hparams["backbone"], self.counts.num_classes, backbone_kwargs=hparams.get("backbone_kwargs")
        )
        try:
            self.model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise BincountError(
                f"the weights do not fit a {hparams['backbone']} with {self.counts.num_classes} classes "
                f"({self.counts}) "
                f"({str(e).splitlines()[0][:160]}); is the model file from another run?"
            ) from None
        self.model.eval()
        self.channels_last = bool(hparams.get("channels_last"))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _logits(self, x: torch.Tensor) -> np.ndarray:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float().numpy()


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, hparams: dict, onnx_path: str | Path, threads: int = 0):
        super().__init__(hparams)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core, as torch does
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()[0].shape[-1]
        if outputs != self.counts.num_classes:  # e.g. a 7-class graph beside an older 5-class bincount.json
            raise BincountError(
                f"{onnx_path} has {outputs} outputs but its {HPARAMS_NAME} describes {self.counts.num_classes} "
                f"classes ({self.counts}); export the model again with `bincount export CKPT --onnx`"
            )

    def _logits(self, x: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.numpy()})[0]


def export_onnx(predictor: TorchPredictor, path: str | Path) -> Path:
    """Trace the network to ONNX with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, 3, predictor.image_size, predictor.image_size)
    with warnings.catch_warnings():
        # The TorchScript-based exporter: no extra dependency (the torch.export one needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            predictor.model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


# -- reading model files ------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Hyper-parameters and backbone state dict of a Lightning checkpoint written by train.py; what a model
    learnt but never answers (the ``learn_overflow`` logit, the ``aux_targets`` outputs) is cut from its
    classifier, so what is served and exported is a plain network with one logit per answered class."""
    ckpt = load_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    overflow, aux = hparams.pop("learn_overflow", False), hparams.pop("aux_targets", None)
    hparams.pop("aux_weight", None)  # the outputs it weighs are cut
    if overflow or aux:
        state = answered_logits_only(state, hparams["backbone"], CountClasses.from_hparams(hparams).num_classes)
    return hparams, state


def answered_logits_only(state: dict[str, torch.Tensor], backbone: str, answered: int) -> dict[str, torch.Tensor]:
    """A timm backbone's state dict with its classifier cut to the first ``answered`` logits."""
    from timm.models import get_pretrained_cfg_value

    head = get_pretrained_cfg_value(backbone, "classifier")
    keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in state]
    if not head or not keys:
        raise BincountError(
            f"cannot find the classifier of {backbone} in the checkpoint to drop its training-only outputs"
        )
    return {k: v[:answered] if k in keys else v for k, v in state.items()}


def read_hparams(folder: Path) -> dict:
    path = folder / HPARAMS_NAME
    try:
        hparams = json.loads(path.read_text())
    except FileNotFoundError:
        raise BincountError(
            f"{folder} has no {HPARAMS_NAME}; export the model with `bincount export CKPT --out DIR`"
        ) from None
    missing = [k for k in ("backbone", "classes", "image_size") if k not in hparams]
    if missing:
        raise BincountError(f"{path} lacks {', '.join(missing)}; re-export the model with `bincount export`")
    return hparams


def load_predictor(path: str | Path, backend: str = "torch", threads: int = 0) -> Predictor:
    """A predictor for a checkpoint (``.ckpt``), an exported folder, or a ``.onnx``/``.safetensors`` file
    beside its ``bincount.json``. ``backend="onnx"`` on a checkpoint or a folder without ``model.onnx``
    exports one to a temporary folder first."""
    if backend not in BACKENDS:
        raise BincountError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    path = Path(path)
    if not path.exists():
        raise BincountError(f"no such model {path}; pass RUN/checkpoints/best.ckpt or a `bincount export` folder")
    if path.is_file() and path.suffix in (".onnx", ".safetensors"):
        folder = path.parent
        if (path.suffix == ".onnx") != (backend == "onnx"):
            raise BincountError(
                f"{path.name} is a {path.suffix[1:]} file; use --backend "
                f"{'onnx' if path.suffix == '.onnx' else 'torch'} or pass the folder"
            )
    else:
        folder = path if path.is_dir() else None

    if folder is None:  # a Lightning checkpoint
        hparams, state = read_checkpoint(path)
    else:
        hparams = read_hparams(folder)
        onnx_file = path if path.suffix == ".onnx" else folder / ONNX_NAME
        if backend == "onnx" and onnx_file.is_file():
            return OnnxPredictor(hparams, onnx_file, threads)
        weights = path if path.suffix == ".safetensors" else folder / WEIGHTS_NAME
        if not weights.is_file():
            raise BincountError(
                f"{folder} has no {weights.name}; export the model with `bincount export CKPT --out DIR`"
            )
        from safetensors.torch import load_file

        state = load_file(str(weights))
    torch_predictor = TorchPredictor(hparams, state)
    if backend == "torch":
        return torch_predictor
    log.info("exporting %s to ONNX for ONNX Runtime (`bincount export --onnx` saves this step)", path)
    with tempfile.TemporaryDirectory(prefix="bincount-onnx-") as tmp:  # the session keeps the graph in memory
        return OnnxPredictor(hparams, export_onnx(torch_predictor, Path(tmp) / ONNX_NAME), threads)
