"""What a model can answer: counts learnt exactly, and optionally one class "more than K".

One ``CountClasses`` is the single source of that answer set for the data (which bins are labelled how),
the model (how many logits), the metrics, predictions, exports and reconcile. A checkpoint or an export
carries it as two plain hyper-parameters, ``classes`` (the exact counts) and ``overflow`` (a bool; absent
in checkpoints older than the overflow class, which is read as ``False``).

    >>> cc = CountClasses([0, 1, 2, 3, 4, 5], overflow=True)
    >>> cc.num_classes, cc.names[-1], cc.index(12), cc.describe(6)
    (7, '6+', 6, {'at_least': 6})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bincount.errors import BincountError


@dataclass(frozen=True)
class CountClasses:
    exact: tuple[int, ...]
    overflow: bool = False

    def __init__(self, exact: Iterable[int], overflow: bool = False):
        counts = sorted(int(c) for c in exact)
        if not counts or len(set(counts)) != len(counts) or counts[0] < 0:
            raise BincountError(f"classes: need distinct counts of 0 or more, got {list(exact)}")
        object.__setattr__(self, "exact", tuple(counts))
        object.__setattr__(self, "overflow", bool(overflow))

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> CountClasses:
        """From a checkpoint's or an export's hyper-parameters (``overflow`` absent: ``False``)."""
        return cls(hparams["classes"], bool(hparams.get("overflow", False)))

    def hparams(self) -> dict:
        return {"classes": list(self.exact), "overflow": self.overflow}

    # -- the answer set ---------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Logits a model needs: one per exact count, plus one for "more than K"."""
        return len(self.exact) + int(self.overflow)

    @property
    def at_least(self) -> int:
        """The smallest count the overflow class stands for (K + 1)."""
        return self.exact[-1] + 1

    @property
    def overflow_index(self) -> int | None:
        return len(self.exact) if self.overflow else None

    @property
    def names(self) -> list[str]:
        """One name per class, in logit order: ``"0"`` ... ``"5"``, and ``"6+"`` for the overflow."""
        return [str(c) for c in self.exact] + ([f"{self.at_least}+"] if self.overflow else [])

    def covers(self, count: int) -> bool:
        """Whether a bin with this many items has a class (exactly, or as "more than K")."""
        return self.index(count) is not None

    def index(self, count: int) -> int | None:
        """The class of a bin holding ``count`` items; None when this model has no class for it."""
        count = int(count)
        if count in self.exact:
            return self.exact.index(count)
        if self.overflow and count > self.exact[-1]:
            return len(self.exact)
        return None

    def is_overflow(self, index: int) -> bool:
        return self.overflow and int(index) == len(self.exact)

    def value(self, index: int) -> int | None:
        """The exact count a class stands for; None for the overflow class."""
        return None if self.is_overflow(index) else self.exact[int(index)]

    def describe(self, index: int) -> dict[str, int]:
        """A prediction as users see it: ``{"count": c}``, or ``{"at_least": K + 1}`` for the overflow."""
        return {"at_least": self.at_least} if self.is_overflow(index) else {"count": self.exact[int(index)]}

    def __str__(self) -> str:
        return ", ".join(self.names)
