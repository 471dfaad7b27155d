"""The network itself: a timm model built from its name, its number of outputs and its own arguments. Lightning-free,
so training (``bincount.model.counter``) and serving (``bincount.serve.predictor``) build it the same way."""

from __future__ import annotations

import timm
import torch

from bincount.errors import BincountError


def build_backbone(
    backbone: str,
    num_classes: int,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    backbone_kwargs: dict | None = None,
) -> torch.nn.Module:
    """A timm network; ``backbone_kwargs`` are more of ``timm.create_model``'s arguments (the architecture's:
    ``output_stride``, ``global_pool``, ``drop_path_rate``...), which serving passes again from the checkpoint."""
    if not timm.is_model(backbone):
        raise BincountError(f"model.backbone: timm has no model {backbone!r} (see timm.list_models())")
    kwargs = dict(backbone_kwargs or {})
    try:
        return timm.create_model(
            backbone, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate, **kwargs
        )
    except TypeError as e:  # an argument this architecture does not take
        raise BincountError(f"model.backbone_kwargs={kwargs}: {backbone} does not take them ({e})") from None
    except Exception as e:  # hub errors come in many types: offline, proxy, missing file
        if not pretrained:
            raise
        raise BincountError(
            f"model.pretrained=true could not fetch timm's ImageNet weights for {backbone} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}); this needs internet. Offline, pass model.weights=PATH "
            "(a local .safetensors or .pth state dict) or model.pretrained=false"
        ) from None
