"""The inference handler shared by the SageMaker endpoint and ``bincount serve``: SageMaker's four
functions, ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``.

Requests: a single image (``image/jpeg``, ``image/png``, ``application/x-image``), or JSON
``{"image": "<base64>"}`` / ``{"images": ["<base64>", ...]}``. Response: JSON
``{"predictions": [{"count": 3, "confidence": 0.81, "probabilities": {"1": 0.01, ...}}, ...]}``; a model
with the overflow class answers ``{"at_least": 6, ...}`` (no ``count``) for "more than 5", and keys its
probabilities by class name (``"0"``, ..., ``"5"``, ``"6+"``).
Bad input raises ``RequestError`` with a 4xx status; inside SageMaker's container it derives from the
inference toolkit's own error, so the endpoint answers with that status too.

Limits come from the environment so the endpoint and the local server read the same knobs:
``BINCOUNT_BACKEND`` (torch | onnx), ``BINCOUNT_MAX_IMAGES`` (per request, default 64) and
``BINCOUNT_MAX_PIXELS`` (per image, default 40 million: a decompression-bomb guard).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os

import numpy as np

from bincount.counts import CountClasses
from bincount.data.images import ImageError, ImageTooLarge, image_size
from bincount.serve.predictor import Predictor, load_predictor

try:  # in SageMaker's PyTorch container: the toolkit answers with this error's status code
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:
    _ToolkitError = Exception

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
ACCEPTED = ", ".join(IMAGE_TYPES + (JSON_TYPE,))
MAX_IMAGES = 64  # images per JSON request; BINCOUNT_MAX_IMAGES overrides


class RequestError(_ToolkitError):
    """A request the handler refuses: ``status_code`` is the HTTP status, ``message`` says why."""

    def __init__(self, status_code: int, message: str):
        Exception.__init__(self, message)
        self.status_code, self.message = status_code, message
        self.phrase = message


def _limit(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _check_image(data: bytes, where: str) -> bytes:
    """Refuse what is not an image, is too small, or would decode to an enormous one, before any pixel
    is decoded (the checks of ``bincount.data.images``, which training applies too)."""
    if not data:
        raise RequestError(400, f"{where} is empty; send the bytes of a JPEG or PNG image")
    try:
        width, height = image_size(io.BytesIO(data))
    except ImageTooLarge as e:
        raise RequestError(413, f"{where}: {e}; resize it first") from None
    except ImageError as e:
        raise RequestError(400, f"{where}: {e}; send a JPEG or PNG") from None
    if width * height > _limit("BINCOUNT_MAX_PIXELS", 40_000_000):
        raise RequestError(413, f"{where} is {width}x{height} pixels, over BINCOUNT_MAX_PIXELS; resize it first")
    return data


def _from_json(body: bytes) -> list[bytes]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(
            400,
            f'the body is not valid JSON ({e.__class__.__name__}); send {{"image": "<base64>"}} or {{"images": [...]}}',
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get("image"), str):
        items = [doc["image"]]
    elif isinstance(doc, dict) and isinstance(doc.get("images"), list):
        items = doc["images"]
    else:
        raise RequestError(400, 'JSON must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')
    if not items:
        raise RequestError(400, '"images" is empty; send at least one base64 image')
    if len(items) > _limit("BINCOUNT_MAX_IMAGES", MAX_IMAGES):
        raise RequestError(413, f"{len(items)} images in one request, over BINCOUNT_MAX_IMAGES; split the batch")
    decoded = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise RequestError(400, f"image {i} is not a base64 string")
        try:
            decoded.append(decode_base64(item))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"image {i} is not valid base64") from None
    return decoded


def decode_base64(text: str) -> bytes:
    """Base64 as clients write it: line breaks (``base64.encodebytes``, MIME), a ``data:image/...;base64,``
    prefix (browsers), the URL-safe alphabet, missing padding. Anything else is an error."""
    if text.startswith("data:") and "," in text:
        header, text = text.split(",", 1)
        if not header.endswith(";base64"):
            raise ValueError("a data URI without ;base64")
    text = "".join(text.split())
    if "-" in text or "_" in text:
        text = text.translate(str.maketrans("-_", "+/"))
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# -- SageMaker's four functions -----------------------------------------------------------------
def model_fn(model_dir: str) -> Predictor:
    """Load the exported model of ``model_dir`` (bincount.json + model.safetensors or model.onnx)."""
    return load_predictor(model_dir, os.environ.get("BINCOUNT_BACKEND", "torch"))


def input_fn(request_body: bytes | str, request_content_type: str | None) -> list[bytes]:
    """Encoded images of a request, checked to be readable images within the limits."""
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body or b"")
    media = _media_type(request_content_type)
    if media not in IMAGE_TYPES and media != JSON_TYPE:
        raise RequestError(415, f"content type {request_content_type!r} is not supported; use one of {ACCEPTED}")
    if not body:
        raise RequestError(400, f"the request body is empty; send an image ({ACCEPTED})")
    if media == JSON_TYPE:
        return [_check_image(data, f"image {i}") for i, data in enumerate(_from_json(body))]
    return [_check_image(body, "the body")]


def predict_fn(input_data: list[bytes], model: Predictor) -> list[dict]:
    """Decode as the data module does, then the evaluation transform and one batched forward pass."""
    images = []
    for i, data in enumerate(input_data):
        try:
            images.append(model.decode(data))
        except ImageError as e:  # truncated or corrupt pixel data, or a mode without a faithful RGB
            raise RequestError(400, f"image {i} cannot be used: {e}") from None
    probabilities = model.predict(images)
    return [answer(model.counts, p) for p in probabilities]


def answer(counts: CountClasses, probabilities: np.ndarray) -> dict:
    """One image's answer: ``count`` (or ``at_least`` for the overflow class), the confidence, and the
    probability of every class keyed by its name (``"1"``, ..., ``"6+"``)."""
    if len(probabilities) != counts.num_classes:
        raise ValueError(f"{len(probabilities)} probabilities for the {counts.num_classes} classes {counts}")
    index = int(np.argmax(probabilities))
    return {
        **counts.describe(index),
        "confidence": round(float(probabilities[index]), 6),
        "probabilities": {name: round(float(q), 6) for name, q in zip(counts.names, probabilities)},
    }


def output_fn(prediction: list[dict], accept: str | None) -> tuple[str, str]:
    media = _media_type(accept)
    if media not in ("", "*/*", JSON_TYPE):
        raise RequestError(406, f"cannot answer in {accept!r}; accept {JSON_TYPE}")
    return json.dumps({"predictions": prediction}), JSON_TYPE
