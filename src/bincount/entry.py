"""What train.py and eval.py share: resolvers, and one clear line instead of a traceback for
errors a user can fix."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import bincount.config  # noqa: F401  (registers resolvers before Hydra composes)
from bincount.errors import explain

log = logging.getLogger("bincount")


def user_errors_exit(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            message = explain(e)
            if message is None:
                raise
            log.error(message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper
