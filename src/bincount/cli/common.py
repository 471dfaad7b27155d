"""What the commands share: one syntax for a list of counts, and defaults read from their one source."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any


def counts(text: str) -> list[int]:
    """A list of counts, written the same way for every command: ``1..5`` (a range, both ends included),
    ``1,2,3``, or Hydra's list syntax ``[1,2,3]`` (as in ``data.classes=[1,2,3]``)."""
    body = text.strip().removeprefix("[").removesuffix("]")
    try:
        if ".." in body:
            lo, hi = (int(x) for x in body.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(c) for c in body.split(",") if c.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts; write e.g. 1..5, 1,2,3 or [1,2,3]")
    return values


def default(fn: Callable, name: str) -> Any:
    """The default of ``fn``'s parameter ``name``: a command-line default is never a second copy."""
    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise TypeError(f"{fn.__qualname__}() has no default for {name}")
    return value
