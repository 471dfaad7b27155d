"""Errors a user can cause and fix: shown as one sentence, not a traceback."""


class BincountError(Exception):
    """A problem with input or configuration; the message names the cause and the fix."""


def explain(exc: BaseException) -> str | None:
    """One sentence for an error a user caused, found anywhere in the exception's cause chain
    (Hydra wraps errors raised while instantiating a config); None for a genuine bug."""
    from omegaconf.errors import OmegaConfBaseException

    seen = exc
    while seen is not None:
        if isinstance(seen, BincountError):
            return str(seen)
        if isinstance(seen, OmegaConfBaseException):
            key = getattr(seen, "full_key", None)
            first = str(seen).splitlines()[0]
            return f"config key {key}: {first}" if key else first
        seen = seen.__cause__ or seen.__context__
    return None
