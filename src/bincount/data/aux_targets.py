"""Auxiliary training targets read from a bin's metadata: more to learn from each training photo.

A count class says little about a bin of 6-88 items ("6+") and nothing about what fills a bin of 4. ABID's
metadata says more: the exact count, how many distinct products (SKUs), and each product's size. Predicting
these beside the count (multi-task learning, a regression head on the same features) gives the network more
signal per photo; the heads are trained on the training split only and never answered, exported or served.

Every target is ``log1p`` of a non-negative quantity, standardised over the training split. A bin whose
metadata lacks a value (a packed folder keeps no SKUs; a product without dimensions) gets NaN there, and the
loss leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from bincount.data.records import BinRecord
from bincount.errors import BincountError


def _count(r: BinRecord) -> float | None:
    return r.count  # the exact count: new information only where the class is "6+"


def _skus(r: BinRecord) -> float | None:
    return r.distinct_skus if r.skus or r.count == 0 else None  # distinct products; no SKUs listed: unknown


def _volume(r: BinRecord) -> float | None:
    """Cubic inches of all items together, from each product's dimensions and quantity (how full the bin is)."""
    if r.count == 0:
        return 0.0
    if not r.skus or any(s.dims_in is None for s in r.skus):
        return None
    return sum(s.quantity * math.prod(s.dims_in) for s in r.skus)


AUX_TARGETS: dict[str, Callable[[BinRecord], float | None]] = {"count": _count, "skus": _skus, "volume": _volume}


def check_aux_targets(names: Sequence[str]) -> list[str]:
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in AUX_TARGETS]
    if unknown or len(set(names)) != len(names):
        raise BincountError(
            f"aux_targets: {names} must name each target once, from {sorted(AUX_TARGETS)} (unknown: {unknown})"
        )
    return names


def aux_matrix(records: Sequence[BinRecord], names: Sequence[str]) -> np.ndarray:
    """``len(records) x len(names)`` float32: each target's ``log1p``, standardised over these records (NaN
    where a record's metadata lacks it). A target no record has is an error, not a column of NaN."""
    names = check_aux_targets(names)
    values = np.full((len(records), len(names)), np.nan, dtype=np.float64)
    for j, name in enumerate(names):
        for i, r in enumerate(records):
            v = AUX_TARGETS[name](r)
            if v is not None:
                values[i, j] = math.log1p(v)
    for j, name in enumerate(names):
        known = values[~np.isnan(values[:, j]), j]
        if len(known) < 2:
            raise BincountError(
                f"aux_targets: {name!r} is known for {len(known)} of {len(records)} training bins; it needs the "
                "bins' metadata (an ABID-layout folder: a packed folder keeps only the counts)"
            )
        values[:, j] = (values[:, j] - known.mean()) / max(known.std(), 1e-6)
    return values.astype(np.float32)
