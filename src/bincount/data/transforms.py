"""Image transforms: training augmentation and evaluation preprocessing, both ending in ImageNet
normalisation so pretrained timm backbones see what they were trained on."""

from __future__ import annotations

import random

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_tensor() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class RandomTranspose:
    """Swap a PIL image's axes with probability ``p``: with the two flips, every symmetry of the square."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.transpose(Image.Transpose.TRANSPOSE) if random.random() < self.p else image


def train_transform(
    image_size: int,
    rotation: float = 15.0,
    hflip: float = 0.5,
    vflip: float = 0.5,
    color_jitter: float = 0.2,
    transpose: float = 0.0,
    zoom_out: float = 0.0,
) -> v2.Compose:
    """Resize, then label-preserving augmentation. No random crops: cutting off part of a bin
    could change how many items it shows, and so the label. ``zoom_out`` shrinks the photo by up to
    that share and places it anywhere inside a black frame of the same size (nothing leaves it)."""
    steps = [v2.Resize((image_size, image_size), antialias=True)]
    if transpose:
        steps.append(RandomTranspose(transpose))
    if zoom_out:
        steps += [
            v2.RandomZoomOut(fill=0, side_range=(1.0, 1.0 / (1.0 - zoom_out)), p=1.0),
            v2.Resize((image_size, image_size), antialias=True),
        ]
    if rotation:
        steps.append(v2.RandomRotation(rotation))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip:
        steps.append(v2.RandomVerticalFlip(vflip))
    if color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps + _to_tensor())


def eval_transform(image_size: int, crop_pct: float = 1.0) -> v2.Compose:
    """Resize then centre-crop. crop_pct defaults to 1.0 (no border lost): items at a bin's edge count too."""
    resize = round(image_size / crop_pct)
    return v2.Compose([v2.Resize((resize, resize), antialias=True), v2.CenterCrop(image_size)] + _to_tensor())
