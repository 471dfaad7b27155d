"""Counting metrics (torchmetrics, so they sync across DDP ranks): accuracy, per-class accuracy,
RMSE and MAE of the predicted count, off-by-one accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError


class OffByOneAccuracy(Metric):
    """Share of bins whose predicted count is within one item of the truth."""

    def __init__(self):
        super().__init__()
        self.add_state("hits", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred_count: torch.Tensor, true_count: torch.Tensor) -> None:
        self.hits += ((pred_count - true_count).abs() <= 1).sum()
        self.total += true_count.numel()

    def compute(self) -> torch.Tensor:
        return self.hits.float() / self.total.clamp(min=1)


class CountMetrics(torch.nn.Module):
    """Class-index metrics and count-valued metrics over one split."""

    def __init__(self, classes: Sequence[int]):
        super().__init__()
        n = len(classes)
        self.register_buffer("counts", torch.tensor(list(classes), dtype=torch.float32), persistent=False)
        self.by_class = MetricCollection(
            {
                "acc": MulticlassAccuracy(n, average="micro"),
                "acc_per_class": MulticlassAccuracy(n, average="none"),
                "confusion": MulticlassConfusionMatrix(n),
            }
        )
        self.by_count = MetricCollection(
            {
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "off_by_one": OffByOneAccuracy(),
            }
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.by_class.update(preds, target)
        self.by_count.update(self.counts[preds], self.counts[target])

    def compute(self) -> dict[str, torch.Tensor]:
        return {**self.by_class.compute(), **self.by_count.compute()}

    def reset(self) -> None:
        self.by_class.reset()
        self.by_count.reset()
