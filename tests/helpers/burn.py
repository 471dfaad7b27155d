"""A CPU burner for a spawned child: this module imports only the standard library, so the child starts in
well under a second (a test module's imports, torch and Lightning, took the child ~10 s)."""

import time


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
