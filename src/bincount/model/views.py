"""What turns a network's raw logits into the counts and confidences bincount reports: test-time views
(the count of a bin does not change when its photo is mirrored or transposed, so the logits of those
views are averaged) and the calibration temperature fitted on the validation split.

No Lightning here: the training module, the predictors (PyTorch and ONNX Runtime) and a SageMaker
endpoint all apply the same two steps through these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# name -> the views averaged at test time: (transpose, flip along H, flip along W)
TTA_VIEWS: dict[str, tuple[tuple[bool, bool, bool], ...]] = {
    "none": ((False, False, False),),
    "hflip": ((False, False, False), (False, False, True)),
    "flips": tuple((False, v, h) for v in (False, True) for h in (False, True)),
    "dihedral": tuple((t, v, h) for t in (False, True) for v in (False, True) for h in (False, True)),
}


def check_tta(tta: str) -> str:
    if tta not in TTA_VIEWS:
        from bincount.errors import BincountError

        raise BincountError(f"model.tta: unknown {tta!r}; choose one of {', '.join(TTA_VIEWS)}")
    return tta


def view(x, transpose: bool, flip_h: bool, flip_w: bool):
    """One symmetric view of an N x C x H x W batch (a torch tensor or a numpy array)."""
    if isinstance(x, np.ndarray):
        if transpose:
            x = x.transpose(0, 1, 3, 2)
        if flip_h:
            x = x[:, :, ::-1]
        if flip_w:
            x = x[:, :, :, ::-1]
        return np.ascontiguousarray(x)
    if transpose:
        x = x.transpose(2, 3)
    dims = [d for d, on in ((2, flip_h), (3, flip_w)) if on]
    return x.flip(dims) if dims else x


def averaged_logits(forward: Callable, x, tta: str = "none"):
    """Mean of ``forward``'s logits over the views ``tta`` names (numpy in, numpy out; torch likewise)."""
    views = TTA_VIEWS[check_tta(tta)]
    total = None
    for v in views:
        out = forward(view(x, *v))
        total = out if total is None else total + out
    return total / len(views)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)`` on held-out
    data (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar, so the predicted
    count (the argmax) never changes, only how sure the model says it is."""
    if len(labels) == 0:
        return 1.0
    # called from evaluation hooks, which run in inference mode: step out of it (clones are plain tensors)
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().cpu().clone(), labels.detach().long().cpu().clone()
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
        t = float(log_t.detach().exp())
    return t if np.isfinite(t) and t > 0 else 1.0


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE of the top-class confidence (15 equal-width bins, L1), as torchmetrics computes it."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    if len(labels) == 0:
        return float("nan")
    return float(
        multiclass_calibration_error(
            probabilities.float(), labels.long(), probabilities.shape[1], n_bins=n_bins, norm="l1"
        )
    )


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> list[dict]:
    """Per confidence bin: how many images, their mean confidence and how often the top count was right
    (the points of a reliability diagram)."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        rows.append(
            {
                "low": lo,
                "high": hi,
                "images": n,
                "confidence": float(confidence[inside].mean()) if n else None,
                "accuracy": float(correct[inside].mean()) if n else None,
            }
        )
    return rows
