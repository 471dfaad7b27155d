"""Decoding an image: the one function training, packing, ``prepare``, ``predict`` and ``serve`` all call,
so a file means the same pixels everywhere.

- Every mode Pillow opens becomes 8-bit RGB faithfully, or is refused with a reason:
  8-bit modes (1, L, P, RGB, CMYK, YCbCr, HSV, RGBX) through Pillow's conversion; 16-bit integers
  (``I;16*``, and ``I`` holding 0-65535 as Pillow decodes 16-bit PPM/PGM) scaled by 255/65535;
  floats (``F``) in [0, 1] scaled by 255; transparent pixels (RGBA, LA, PA, a palette or colour key
  with transparency) composited on white. 32-bit integers, floats outside [0, 1], CIELab and any
  other mode are refused: the file does not say which values are black and white.
- The EXIF orientation is applied, so a photo stored sideways is seen upright.
- An image under ``MIN_IMAGE_SIDE`` pixels on a side, or one Pillow takes for a decompression bomb,
  is refused.

Refusals raise ``ImageError``; its message is a short reason that groups well in skip reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# File names taken for images when a folder is searched (.jpg first when an id has several).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
# Below this a photo cannot show the items of a bin; the same limit for training, predict and serve.
MIN_IMAGE_SIDE = 32

_EIGHT_BIT = ("1", "L", "P", "RGB", "CMYK", "YCbCr", "HSV", "RGBX")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa")
_BACKGROUND = (255, 255, 255, 255)  # transparent pixels are shown on white
_BITS_PER_SAMPLE = 258  # the TIFF tag that declares a sample's bit depth


class ImageError(ValueError):
    """An image that cannot be used; ``str(e)`` says why in a few words."""


class ImageTooLarge(ImageError):
    """More pixels than Pillow's decompression-bomb limit."""


def _open(source: str | Path | BinaryIO) -> Image.Image:
    try:
        return Image.open(source)
    except FileNotFoundError:
        raise ImageError("image missing") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image too large (over {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
    except Exception as e:  # PIL raises many types for bytes that are not an image
        raise ImageError(f"unreadable image ({type(e).__name__})") from None


def _check_size(size: tuple[int, int]) -> None:
    if min(size) < MIN_IMAGE_SIDE:
        raise ImageError(f"image too small (under {MIN_IMAGE_SIDE} pixels a side)")


def image_size(source: str | Path | BinaryIO) -> tuple[int, int]:
    """Width and height from the header alone (nothing decoded), after the checks every decode makes
    first: readable, not a decompression bomb, not too small."""
    with _open(source) as im:
        _check_size(im.size)
        return im.size


def _declared_bits(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)
    bits = tags.get(_BITS_PER_SAMPLE) if tags is not None else None
    return int(bits[0] if isinstance(bits, tuple) else bits) if bits else None


def _gray(values: np.ndarray, scale: float) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L").convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB pixels of a decoded image of any mode, or ``ImageError`` when no faithful conversion exists."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _ALPHA or "transparency" in im.info and mode in ("P", "L", "RGB"):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, _BACKGROUND), rgba).convert("RGB")
    if mode in _EIGHT_BIT:
        return im.convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(im).astype(np.float64)
        if mode == "I" and (_declared_bits(im) or 16) > 16:
            raise ImageError("32-bit integer pixels (no standard range; save as 8 or 16 bits)")
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError("integer pixels outside 0-65535")
        return _gray(values, 255 / 65535)
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all() or values.size and (values.min() < 0 or values.max() > 1):
            raise ImageError("floating-point pixels outside 0-1 (no standard range; save as 8 or 16 bits)")
        return _gray(values, 255)
    raise ImageError(f"unsupported image mode {mode} (save as RGB)")


def load_rgb(source: str | Path | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Decode an image as 8-bit RGB, upright (EXIF orientation applied). For JPEGs, ``min_side`` asks
    libjpeg for a DCT-scaled decode no smaller than that, several times faster on full-size originals.
    Raises ``ImageError`` with the reason when the image cannot be used."""
    with _open(source) as im:
        _check_size(im.size)  # the stored size, before draft() shrinks it
        try:
            if min_side:
                im.draft("RGB", (min_side, min_side))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as e:  # truncated or corrupt pixel data only shows when decoding
            raise ImageError(f"unreadable image ({type(e).__name__})") from None
        rgb = to_rgb(im)
        return rgb.copy() if rgb is im else rgb  # a copy outlives the closed file


def image_problem(source: str | Path | BinaryIO) -> str | None:
    """Why an image cannot be used, or None. A full decode (at 1/8 scale for JPEGs: still every byte is
    read), which is what catches truncated files, and the same conversion training applies."""
    try:
        load_rgb(source, min_side=1)
    except ImageError as e:
        return str(e)
    return None
