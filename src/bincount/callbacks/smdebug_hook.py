"""SageMaker Debugger inside a training job: a Lightning callback that registers smdebug's hook on the
model when the job carries a debugger hook config (the platform writes it to
``/opt/ml/input/config/debughookconfig.json`` from the request's DebugHookConfig). Anywhere else it
does nothing; ``bincount.callbacks.debugger.LocalDebugger`` records the same collections everywhere.

smdebug's hook then saves the collections the config asks for (weights, biases, gradients, losses)
every ``save_interval`` steps, as a trial that SageMaker's rules read and ``bincount debug-report``
plots. smdebug needs numpy<2 and the pure-Python protobuf (see sagemaker_requirements.txt).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch

from bincount.errors import BincountError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/opt/ml/input/config/debughookconfig.json"
LOSS_NAME = "CrossEntropyLoss"  # smdebug's losses collection takes tensors named like "<X>Loss_output_N"


class SMDebugHook(L.Callback):
    def __init__(self, config_path: str | None = None):
        # smdebug's own variable for the config's place, else where SageMaker writes it
        self.config_path = Path(config_path or os.environ.get("SMDEBUG_CONFIG_FILE_PATH", DEFAULT_CONFIG))
        self.hook = None
        self._modes = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.hook is not None or not self.config_path.is_file():
            return
        try:
            import smdebug.pytorch as smd
        except ImportError as e:
            raise BincountError(
                f"the job has a SageMaker Debugger config ({self.config_path}) but smdebug does not "
                f"import ({e}); install src/bincount/launch/sagemaker_requirements.txt"
            ) from None
        self._modes = smd.modes
        self.hook = smd.Hook.create_from_json_file(str(self.config_path))
        # Every submodule's outputs and every parameter's gradient; the step advances with each
        # forward pass of the module, per mode (train / eval).
        self.hook.register_module(pl_module)
        log.info("smdebug hook registered from %s", self.config_path)

    def _set_mode(self, name: str) -> None:
        if self.hook is not None:
            self.hook.set_mode(getattr(self._modes, name))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._set_mode("TRAIN")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._set_mode("EVAL")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._set_mode("TRAIN")

    def _record_loss(self, loss) -> None:
        # The model computes its loss functionally (F.cross_entropy); smdebug takes those through
        # record_tensor_value, into its losses collection.
        if self.hook is not None and isinstance(loss, torch.Tensor):
            self.hook.record_tensor_value(LOSS_NAME, loss.detach())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record_loss(outputs.get("loss") if isinstance(outputs, dict) else outputs)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record_loss(outputs)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.hook is None or stage != "fit":
            return
        # smdebug has no way to unregister: drop its module hooks, or the test that follows fit would
        # go on writing steps after close() and leave unfinished (.tmp) files in the trial
        for module in pl_module.modules():
            for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks):
                for key, fn in list(hooks.items()):
                    if getattr(fn, "__self__", None) is self.hook:
                        del hooks[key]
        self.hook.close()
        self.hook = None
