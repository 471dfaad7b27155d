"""Small counters with a chosen answer set, saved as Lightning checkpoints (``state_dict`` +
``hyper_parameters``, as train.py writes them) for the prediction, serving, export and reconcile tests.

``constant_counter`` answers the same probabilities for every photo (its classifier sees no pixel): the
way to drive the real predict path with a specific, confident answer. ``mixed_counter`` is an untrained
network whose overflow logit is shifted so that about half of the given real images are answered
"more than K" and the rest with exact counts (never 0 unless ``allow_empty``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

BACKBONE, SIZE = "resnet10t", 32


def _model(classes, overflow: bool, seed: int):
    from bincount.model.counter import CountingModel

    torch.manual_seed(seed)
    return CountingModel(backbone=BACKBONE, classes=list(classes), overflow=overflow, image_size=SIZE)


def save_checkpoint(model, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """A checkpoint as Lightning writes one; ``drop`` leaves hyper-parameters out (an older checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hparams = {k: v for k, v in dict(model.hparams).items() if k not in drop}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return path


def constant_counter(path: Path, classes, overflow: bool, probabilities) -> Path:
    """A counter whose answer is ``probabilities`` (one per class) whatever the photo."""
    model = _model(classes, overflow, 0)
    fc = model.model.get_classifier()
    assert fc.out_features == len(probabilities)
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(torch.log(torch.tensor(probabilities, dtype=torch.float32)))
    return save_checkpoint(model, path)


def mixed_counter(path: Path, images: list[Path], classes=(0, 1, 2, 3, 4, 5), allow_empty=False) -> Path:
    """An overflow counter answering "more than K" for about half of ``images`` (real photos)."""
    from bincount.serve.predictor import load_predictor

    model = _model(classes, True, 1)
    save_checkpoint(model, path)
    predictor = load_predictor(path)
    logits = predictor.logits([predictor.decode(p) for p in images])
    fc = model.model.get_classifier()
    with torch.no_grad():
        if not allow_empty and 0 in classes:
            fc.bias[0] -= 100.0  # class 0 never wins: an empty answer must come from a test's own row
            logits[:, 0] -= 100.0
        margin = np.delete(logits, -1, axis=1).max(1) - logits[:, -1]  # how far the overflow is from winning
        fc.bias[-1] += float(np.median(margin)) + 1e-3
    return save_checkpoint(model, path)
