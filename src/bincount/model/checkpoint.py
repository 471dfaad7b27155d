"""Reading a checkpoint safely: the one loader behind eval.py, train.py ``ckpt_path=``, predict, export
and serve, so every one of them refuses a file that would run code when unpickled, in the same line.

Lightning checkpoints written by train.py hold only tensors and plain values (hyper-parameters, loop
and callback states, the split), so they load with ``weights_only=True``; nothing else is accepted.
Torch only, so a serving container needs no Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bincount.errors import BincountError


def load_checkpoint(path: str | Path, key: str = "") -> dict:
    """The checkpoint at ``path`` as a dict, loaded with ``weights_only=True``; ``BincountError`` when
    it is missing, unsafe or not a bincount checkpoint (the message starts with ``key``, the config key
    or option that named the file, when given)."""
    path = Path(path)
    where = f"{key}: " if key else ""
    if not path.is_file():
        raise BincountError(
            f"{where}no such checkpoint {path}; pass RUN/checkpoints/best.ckpt or last.ckpt written by train.py"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled objects (possibly malicious), or bytes that are no checkpoint at all
        raise BincountError(
            f"{where}{path} is not a checkpoint that loads with weights_only=True ({type(e).__name__}); "
            "bincount never unpickles objects: pass a checkpoint written by train.py or a folder "
            "from `bincount export`"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise BincountError(f"{where}{path} has no state_dict and hyper_parameters; is it a bincount checkpoint?")
    return ckpt
