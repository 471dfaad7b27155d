"""The network a counter trains and serves: one timm backbone, or an ensemble of several.

No Lightning here: the training module and the predictors (an endpoint container has no Lightning) build
the same network from the same hyper-parameters, so a checkpoint's state dict loads into either.

An ensemble (``model.members=K``) is K networks of one architecture from K random initialisations, trained
side by side on the same batches, each on its own loss; its logits are the mean of theirs. On small data
one network's answers move by +-2 points with the seed (README, "How good is it"); averaging several
removes much of that variance, at K times the compute of one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch

from bincount.errors import BincountError

log = logging.getLogger(__name__)


class Ensemble(torch.nn.Module):
    """K networks evaluated as the mean of their logits."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise BincountError(f"an ensemble needs at least 2 members, not {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits: K x batch x classes."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(0)


def network_name(backbone: str, members: int = 1) -> str:
    """How plots and messages name the network: ``resnet10t``, or ``3 x resnet10t`` for an ensemble."""
    return backbone if members == 1 else f"{members} x {backbone}"


def members_of(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The networks a model is made of: an ensemble's members, or the network itself."""
    return list(network.members) if isinstance(network, Ensemble) else [network]


def build_network(
    backbone: str, num_classes: int, members: int = 1, pretrained: bool = False, drop_rate: float = 0.0
) -> torch.nn.Module:
    """One backbone (``members=1``: state-dict keys as timm names them), or an ``Ensemble`` of ``members``."""
    if members < 1:
        raise BincountError(f"model.members: {members}; one network or more")
    if members == 1:
        return build_backbone(backbone, num_classes, pretrained, drop_rate)
    return Ensemble([build_backbone(backbone, num_classes, pretrained, drop_rate) for _ in range(members)])


def build_backbone(
    backbone: str, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0
) -> torch.nn.Module:
    if not timm.is_model(backbone):
        raise BincountError(f"model.backbone: timm has no model {backbone!r} (see timm.list_models())")
    try:
        return timm.create_model(backbone, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as e:  # hub errors come in many types: offline, proxy, missing file
        if not pretrained:
            raise
        raise BincountError(
            f"model.pretrained=true could not fetch timm's ImageNet weights for {backbone} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}); this needs internet. Offline, pass model.weights=PATH "
            "(a local .safetensors or .pth state dict) or model.pretrained=false"
        ) from None


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into ``model``: a safetensors file, a plain state dict or a Lightning
    checkpoint, never unpickling arbitrary objects. Tensors whose shape does not fit (a classifier
    head for another number of classes) are left at their initial values and reported."""
    path = Path(path)
    if not path.is_file():
        raise BincountError(f"model.weights: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BincountError(f"model.weights: {path} is not a loadable weights file ({type(e).__name__})") from None
        if "state_dict" in state:  # a Lightning checkpoint of this module
            state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = model.load_state_dict(fitting, strict=False)
    report = {
        "loaded": sorted(fitting),
        "missing": sorted(result.missing_keys),
        "skipped_shape": sorted(k for k in state if k in own and k not in fitting),
        "unexpected": sorted(k for k in state if k not in own),
    }
    if not fitting:
        raise BincountError(f"model.weights: no tensor of {path} fits this backbone; is it the right model?")
    log.info(
        "weights %s: %d tensors loaded, %d left initial (%s)",
        path,
        len(fitting),
        len(report["missing"]),
        ", ".join(report["missing"][:4]),
    )
    return report
