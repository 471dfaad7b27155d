"""Augmentation and normalisation of a whole uint8 batch at once, on the device that holds it.

The packed loader delivers uint8 batches (a quarter of the bytes of float32 to copy to the GPU);
this turns them into what the model eats, with the same label-preserving augmentation as
``transforms.train_transform`` (rotation, flips, transposes, zoom out, shifts, colour jitter; no crops) drawn independently for
every image, in a few batched tensor operations instead of per-image PIL calls in loader workers.

One difference from the per-image torchvision pipeline, kept on purpose: colour jitter applies
brightness, contrast, saturation in that fixed order (torchvision shuffles the order per image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def geometry(
    x: torch.Tensor,
    angle: torch.Tensor,
    flip_x: torch.Tensor,
    flip_y: torch.Tensor,
    transpose: torch.Tensor | None = None,
    zoom: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Move each image's content in one nearest-neighbour resampling (torchvision's default for
    rotation and affine), corners filled with black: ``transpose`` swaps its axes (with the two flips,
    all eight symmetries of the square), then it is mirrored where ``flip_x`` / ``flip_y`` are true,
    rotated by ``angle`` (radians) about its centre, scaled by ``zoom`` (< 1 shrinks it inside a black
    border, so nothing leaves the frame) and moved by ``shift`` (N x 2, a share of the width and height).
    Identity parameters move pixels exactly."""
    n, _, h, w = x.shape
    sx = 1.0 - 2.0 * flip_x.to(x.dtype)
    sy = 1.0 - 2.0 * flip_y.to(x.dtype)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if zoom is not None:  # output -> input coordinates: divide by the zoom
        cos, sin = cos / zoom.to(x.dtype), sin / zoom.to(x.dtype)
    # Output -> input pixel centres in grid_sample's [-1, 1] coordinates: R @ diag(sx, sy) / zoom, minus
    # the shift, with x and y swapped for a transpose. Built by broadcasting: affine_grid's batched matmul with an inner
    # size of 3 is several times slower on CPU.
    xs = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    a, b = (cos * sx).view(-1, 1, 1), (-sin * sy).view(-1, 1, 1)
    c, d = (sin * sx).view(-1, 1, 1), (cos * sy).view(-1, 1, 1)
    gx, gy = a * xs + b * ys, c * xs + d * ys
    if shift is not None:
        gx = gx - 2 * shift[:, 0].to(x.dtype).view(-1, 1, 1)
        gy = gy - 2 * shift[:, 1].to(x.dtype).view(-1, 1, 1)
    if transpose is not None:
        t = transpose.view(-1, 1, 1)
        gx, gy = torch.where(t, gy, gx), torch.where(t, gx, gy)
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="nearest", padding_mode="zeros", align_corners=False)


def color_jitter_(
    x: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    gray_weights: torch.Tensor,
    top: float = 255.0,
) -> torch.Tensor:
    """torchvision's brightness, contrast and saturation adjustments with per-image factors, in place
    on floats in [0, top]: each blends with black, the image's mean grey, and its own greyscale
    (``gray_weights``: the luma weights as a 1 x 3 x 1 x 1 tensor on x's device)."""
    x.mul_(_per_image(brightness)).clamp_(max=top)
    mean = (x.mean((2, 3), keepdim=True) * gray_weights).sum(1, keepdim=True)
    c = _per_image(contrast)
    x.mul_(c).add_((1 - c) * mean).clamp_(max=top)
    s = _per_image(saturation)
    gray = F.conv2d(x, gray_weights)  # N x 1 x H x W in one pass
    return x.mul_(s).add_(gray.mul_(1 - s)).clamp_(0, top)


class BatchTransform:
    """uint8 ``N x 3 x H x W`` batch -> normalised float32 batch of ``image_size``, augmented when
    built by ``train_batch_transform``. Works on any device; random draws use that device's generator
    (seeded by ``seed_everything``). Values stay in [0, 255] until the normalisation, which folds in
    the division by 255, and every step after the resampling works in place: on a CPU the cost is
    memory traffic, so fewer passes and fresh allocations is what makes it fast."""

    def __init__(
        self,
        image_size: int,
        rotation: float = 0.0,
        hflip: float = 0.0,
        vflip: float = 0.0,
        color_jitter: float = 0.0,
        transpose: float = 0.0,
        zoom_out: float = 0.0,
        crop_pct: float = 1.0,
        cpu_chunk: int = 8,
    ):
        self.image_size, self.crop_pct = int(image_size), float(crop_pct)
        self.rotation, self.hflip, self.vflip, self.jitter = (
            float(rotation),
            float(hflip),
            float(vflip),
            float(color_jitter),
        )
        self.transpose, self.zoom_out = float(transpose), float(zoom_out)
        self.cpu_chunk = cpu_chunk  # on a CPU, a few images at a time stay in cache
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def augments(self) -> bool:
        return bool(self.moves or self.jitter)

    @property
    def moves(self) -> bool:
        return bool(self.rotation or self.hflip or self.vflip or self.transpose or self.zoom_out)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Mean, std (both x 255) and luma weights on ``device``, made once: no copy to it per batch."""
        if device not in self._constants:
            self._constants[device] = tuple(
                torch.tensor(v, device=device).mul_(k).view(1, 3, 1, 1)
                for v, k in ((IMAGENET_MEAN, 255), (IMAGENET_STD, 255), (_GRAY, 1))
            )
        return self._constants[device]

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (then centre-crop when crop_pct < 1) as eval_transform does, for packed images whose
        size is not the model's."""
        size = round(self.image_size / self.crop_pct)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if size != self.image_size:
            top = (size - self.image_size) // 2
            x = x[..., top : top + self.image_size, top : top + self.image_size]
        return x

    def _augment(self, x: torch.Tensor, gray_weights: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        flip_x, flip_y = torch.rand(n, device=dev) < self.hflip, torch.rand(n, device=dev) < self.vflip
        if self.moves:
            angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.rotation)
            transpose = torch.rand(n, device=dev) < self.transpose
            # shrunk by up to zoom_out and moved anywhere inside the frame: no item leaves the photo
            zoom = 1 - torch.rand(n, device=dev) * self.zoom_out
            shift = (torch.rand(n, 2, device=dev) * 2 - 1) * ((1 - zoom) / 2).unsqueeze(1)
            x = geometry(x, angle, flip_x, flip_y, transpose, zoom, shift)
        if self.jitter:
            lo, hi = max(0.0, 1 - self.jitter), 1 + self.jitter
            b, c, s = (torch.empty(n, device=dev).uniform_(lo, hi) for _ in range(3))
            x = color_jitter_(x, b, c, s, gray_weights)
        return x

    def _transform(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        gray_weights: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._resize(x.float())
        if self.augments:
            x = self._augment(x, gray_weights)
        return torch.div(x.sub_(mean), std, out=out) if out is not None else x.sub_(mean).div_(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"BatchTransform takes a uint8 N x 3 x H x W batch, got {x.dtype} {tuple(x.shape)}")
        constants = self._on(x.device)
        if x.device.type != "cpu":
            return self._transform(x, *constants)
        if len(x) <= self.cpu_chunk:
            return self._transform(x, *constants)
        out = torch.empty((len(x), 3, self.image_size, self.image_size))
        for start in range(0, len(x), self.cpu_chunk):
            stop = start + self.cpu_chunk
            self._transform(x[start:stop], *constants, out=out[start:stop])
        return out


def train_batch_transform(
    image_size: int,
    rotation: float = 15.0,
    hflip: float = 0.5,
    vflip: float = 0.5,
    color_jitter: float = 0.2,
    transpose: float = 0.0,
    zoom_out: float = 0.0,
) -> BatchTransform:
    """The batched twin of ``transforms.train_transform`` (same arguments, so ``data.augment`` fits both)."""
    return BatchTransform(image_size, rotation, hflip, vflip, color_jitter, transpose, zoom_out)


def eval_batch_transform(image_size: int, crop_pct: float = 1.0) -> BatchTransform:
    return BatchTransform(image_size, crop_pct=crop_pct)
