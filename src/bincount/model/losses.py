"""The training loss of a counter: cross-entropy against hard, smoothed or soft ordinal targets.

Soft ordinal labels (SORD, Diaz & Marathe, CVPR 2019) spread the target over neighbouring counts by how far
they are from the truth, ``softmax(-scale * (position - true position)^2)``: guessing 4 for a bin of 5 costs
less than guessing 1, and the model keeps one logit per class (so TTA, calibration, serving and reconcile
read it like any classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_ordinal_targets(labels: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
    """Target distributions, shape (batch, classes): ``positions`` is each class's place on the count
    axis (its count; the overflow class sits at K + 1), ``scale`` how sharply the target falls away."""
    distance = positions.view(1, -1) - positions[labels].view(-1, 1)
    return torch.softmax(-scale * distance.float() ** 2, dim=1)


def count_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    positions: torch.Tensor,
    label_smoothing: float = 0.0,
    ordinal_scale: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy; with ``ordinal_scale > 0`` against soft ordinal targets (label smoothing then unused)."""
    if ordinal_scale > 0:
        return soft_cross_entropy(logits, soft_ordinal_targets(labels, positions.to(logits.device), ordinal_scale))
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions (batch, classes): soft ordinal labels, mixup's blends."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def masked_smooth_l1(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smooth L1 between auxiliary outputs and targets, the mean over the entries whose target is known (not NaN);
    0, with no gradient, where none is. Masked rather than indexed: no host sync a step, one graph shape for DDP."""
    known = ~torch.isnan(targets)
    per_entry = F.smooth_l1_loss(predicted, torch.nan_to_num(targets).to(predicted.dtype), reduction="none")
    return (per_entry * known).sum() / known.sum().clamp(min=1)
