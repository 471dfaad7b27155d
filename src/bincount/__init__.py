"""bincount: count items in warehouse bin photos."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bincount")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
