"""Counting metrics over one split (torchmetrics, so they sync across DDP ranks).

Class metrics: accuracy, per-class accuracy (recall per true class) and the confusion matrix, with the
overflow class ("more than K") as a row and a column like any other. Count metrics (``rmse``, ``mae``,
``off_by_one``) need a number on both sides, so they are computed over the bins whose true class AND
predicted class are both exact counts; ``exact_bins`` says how many bins that was (every bin, for a model
without the overflow class). ``overflow_precision`` / ``overflow_recall`` (with the overflow class) and
``empty_precision`` / ``empty_recall`` (when 0 is a class) are read off the same confusion matrix; a
figure whose denominator is empty (no bin predicted, or none true, in that class) is NaN. With the overflow
class, ``acc_exact`` is the accuracy over the bins whose TRUE count is exact (a bin of 5 called "6+" is
wrong): on the same bins, the figure a model without the overflow class reports as its accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from bincount.counts import CountClasses


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return (num / den).float() if den > 0 else torch.tensor(float("nan"))


def count_figures(confusion: torch.Tensor, counts: CountClasses) -> dict[str, torch.Tensor]:
    """RMSE, MAE and off-by-one over the exact-count cells of a confusion matrix (rows: true class,
    columns: predicted), how many bins those cells hold, and the overflow and empty-bin precision and
    recall where the answer set has those classes."""
    m = confusion.double()
    exact = len(counts.exact)
    values = torch.tensor(counts.exact, dtype=torch.float64, device=m.device)
    cells = m[:exact, :exact]
    diff = (values[:, None] - values[None, :]).abs()  # |true - predicted| of each cell
    n = cells.sum()
    out = {
        "rmse": _ratio((cells * diff**2).sum(), n).sqrt(),
        "mae": _ratio((cells * diff).sum(), n),
        "off_by_one": _ratio((cells * (diff <= 1)).sum(), n),
        "exact_bins": n.float(),
    }
    if counts.overflow:
        out["acc_exact"] = _ratio(m[:exact, :exact].diagonal().sum(), m[:exact].sum())
    for name, index in (("overflow", counts.overflow_index), ("empty", counts.index(0) if 0 in counts.exact else None)):
        if index is not None:
            hits = m[index, index]
            out[f"{name}_precision"] = _ratio(hits, m[:, index].sum())
            out[f"{name}_recall"] = _ratio(hits, m[index, :].sum())
    return {k: v.to(confusion.device) for k, v in out.items()}


class CountMetrics(torch.nn.Module):
    """Class-index metrics of one split, and the count figures derived from its confusion matrix.
    ``classes``: the answer set (a list of counts: exact counts, no overflow class)."""

    def __init__(self, classes: Sequence[int] | CountClasses):
        super().__init__()
        self.answer_set = classes if isinstance(classes, CountClasses) else CountClasses(classes)
        n = self.answer_set.num_classes
        self.by_class = MetricCollection(
            {
                "acc": MulticlassAccuracy(n, average="micro"),
                "acc_per_class": MulticlassAccuracy(n, average="none"),
                "confusion": MulticlassConfusionMatrix(n),
            }
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.by_class.update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.by_class.compute()
        return {**values, **count_figures(values["confusion"], self.answer_set)}

    def reset(self) -> None:
        self.by_class.reset()
