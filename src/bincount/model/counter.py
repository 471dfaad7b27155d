"""The counting model: a timm backbone with a head of one logit per count class."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR

from bincount.counts import CountClasses
from bincount.data.aux_targets import check_aux_targets
from bincount.errors import BincountError
from bincount.model.backbone import build_backbone
from bincount.model.losses import count_loss, masked_smooth_l1, soft_cross_entropy
from bincount.model.metrics import CountMetrics
from bincount.model.schedules import refit_cosine
from bincount.model.views import (
    averaged_logits,
    check_tta,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)

log = logging.getLogger(__name__)

# validation figures shown on the progress bar (the others are logged too)
PROGRESS_BAR = ("acc", "rmse", "mae", "off_by_one")
# figures only some answer sets have: acc_exact and overflow (with the overflow class), empty (when 0 is a class)
OPTIONAL_FIGURES = ("acc_exact", "overflow_precision", "overflow_recall", "empty_precision", "empty_recall")


def metric_name(class_name: str) -> str:
    """A class name as part of a logged metric's name: ``"6+"`` -> ``"6plus"`` (no ``+`` in metric names)."""
    return class_name.replace("+", "plus")


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


class CountingModel(L.LightningModule):
    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_kwargs: dict | None = None,
        classes: Sequence[int] = (1, 2, 3, 4, 5),
        overflow: bool = False,
        learn_overflow: bool = False,
        pretrained: bool = False,
        weights: str | None = None,
        image_size: int = 224,
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        ordinal_scale: float = 0.0,
        count_loss_weight: float = 0.0,
        aux_targets: Sequence[str] = (),
        aux_weight: float = 0.5,
        mixup_alpha: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        tta: str = "none",
        temperature: float = 1.0,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        classes = [int(c) for c in classes]
        check_tta(tta)
        # Only plain values go into the checkpoint, so it loads with weights_only=True.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.classes = classes
        # the answer set: exact counts, plus "more than K" when overflow is on
        self.counts = CountClasses(classes, overflow)
        if learn_overflow and overflow:
            raise BincountError("model.learn_overflow: the overflow class is already answered (overflow=true)")
        # what training labels: the answer set, and with learn_overflow one more class, "more than K", whose
        # logit the network learns from the bins above K but forward() drops: the model never answers it
        self.training_counts = CountClasses(classes, overflow or learn_overflow)
        # auxiliary targets (bincount.data.aux_targets): one regression output each after the training classes'
        # logits, trained beside them and, like the training-only class, dropped by forward(), export and serving
        self.aux_targets = check_aux_targets(aux_targets)
        outputs = self.training_counts.num_classes + len(self.aux_targets)
        self.model = build_backbone(backbone, outputs, pretrained and not weights, drop_rate, backbone_kwargs)
        # mixup (Zhang et al. 2018): training photos blended in pairs, their smoothed labels in the same share
        self.mixup = self._mixup(mixup_alpha, label_smoothing) if mixup_alpha else None
        if weights:
            load_weights(self.model, weights)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the count each class stands for, for the ordinal loss term: the overflow class stands for K + 1,
        # the least it means (a bin of 12 predicted "6+" costs nothing there, one of 6 predicted 5 little)
        values = classes + ([self.counts.at_least] if self.training_counts.overflow else [])
        self.register_buffer("count_values", torch.tensor(values, dtype=torch.float32), persistent=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # ModuleDict keys may not shadow nn.Module attributes (``train``), hence the suffix.
        # training accuracy over what training labels; validation and test over the answer set
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_split": CountMetrics(self.training_counts if s == "train" else self.counts)
                for s in ("train", "val", "test")
            }
        )
        self.test_results: dict | None = None
        # (logits, labels) of evaluation batches, kept while calibrating and testing
        self.collecting = False
        self._collected: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.calibration: dict | None = None  # the last calibration pass's validation figures

    def _mixup(self, alpha: float, label_smoothing: float):
        """timm's batch mixup: one share ``lam ~ Beta(alpha, alpha)`` a batch, each photo blended with the one
        at its mirrored place in the batch (drawn from numpy's generator, which the run's seed sets)."""
        from timm.data import Mixup

        hard_labels = {
            "ordinal_scale": self.hparams.ordinal_scale,
            "count_loss_weight": self.hparams.count_loss_weight,
            "aux_targets": self.aux_targets,
        }  # what takes each photo's own label, which a blend no longer has
        clash = [name for name, value in hard_labels.items() if value]
        if alpha < 0 or clash:
            raise BincountError(
                f"model.mixup_alpha={alpha}: must be >= 0 (0: off), and blends only plain or smoothed labels "
                f"(set {', '.join(f'model.{n}' for n in clash) or 'them'} off)"
            )
        return Mixup(
            mixup_alpha=alpha, cutmix_alpha=0.0, label_smoothing=label_smoothing,
            num_classes=self.training_counts.num_classes,
        )  # fmt: skip

    def setup(self, stage: str) -> None:
        # torch.compile for training only (evaluating a checkpoint should not pay the compile time);
        # Module.compile() compiles in place, so state-dict keys and checkpoints stay the same.
        if stage == "fit" and self.hparams.get("compile"):
            self.model.compile()

    def forward(self, x: torch.Tensor, all_training_classes: bool = False) -> torch.Tensor:
        """One logit per class of the answer set (``counts``); with ``all_training_classes``, one per class
        training labels (``training_counts``: with learn_overflow, one more), then one output per auxiliary
        target. Training calls it through ``self(...)`` too, so module hooks (SageMaker Debugger's) see every
        training step."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.model(x)
        return logits if all_training_classes else logits[:, : self.counts.num_classes]

    @property
    def temperature(self) -> float:
        return float(self.hparams.temperature)

    def set_temperature(self, value: float) -> None:
        """Kept in the hyper-parameters, so every checkpoint saved from now on (and every export) carries it."""
        self.hparams.temperature = float(value)

    def evaluation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits as evaluated and served, before the temperature: averaged over the test-time views, in
        the weights' own precision. Serving (bincount predict, serve, ONNX) runs the fp32 weights without
        autocast, so testing and calibration do too: a run trained in bf16 autocast reports, and fits its
        temperature on, the logits it will serve (in bf16 the test accuracy moved by an image in 513)."""
        with torch.autocast(self.device.type, enabled=False):
            return averaged_logits(self, x, self.hparams.tta)

    def calibrated_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluation_logits(x) / self.temperature

    def predict_counts(self, logits: torch.Tensor) -> torch.Tensor:
        """The count of each row's top class; the overflow class gives K + 1, the least it stands for."""
        return self.count_values.to(logits.device)[logits.argmax(1)].long()

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y, *aux = batch  # training batches carry the auxiliary targets where the data module has them
        # Validation while fitting sees one view (it only ranks checkpoints); testing and calibration
        # see what is served: every test-time view.
        aux_loss = blended = None
        if stage == "train":
            if self.mixup is not None and len(x) % 2 == 0:  # (pairs need an even batch: a last odd one is not mixed)
                x, blended = self.mixup(x.clone(), y)
            outputs = self(x, all_training_classes=True)
            logits = outputs[:, : self.training_counts.num_classes]
            if self.aux_targets:
                if not aux:
                    raise BincountError(
                        f"model.aux_targets={self.aux_targets}: the training batches carry no auxiliary targets; "
                        "set data.aux_targets to the same names"
                    )
                aux_loss = masked_smooth_l1(outputs[:, self.training_counts.num_classes :].float(), aux[0])
        else:
            logits = self.evaluation_logits(x) if stage == "test" or self.collecting else self(x)
        if self.collecting:
            self._collected.append((logits.detach().float(), y.detach()))
        if stage == "train":
            smoothing, ordinal = self.hparams.label_smoothing, self.hparams.get("ordinal_scale", 0.0)
            if blended is not None:
                loss = soft_cross_entropy(logits, blended)
            else:
                loss = count_loss(logits, y, self.count_values, smoothing, ordinal)
            if aux_loss is not None:
                self.log("train/aux_loss", aux_loss, on_step=False, on_epoch=True, batch_size=len(y))
                loss = loss + self.hparams.aux_weight * aux_loss
        else:  # evaluation losses stay plain cross-entropy, comparable between recipes
            loss = F.cross_entropy(logits, y)
        if self.hparams.count_loss_weight:
            # Counts are ordered: also penalise how far the expected count is from the truth, so
            # guessing 4 for a bin of 5 costs less than guessing 1.
            expected = logits.float().softmax(1) @ self.count_values
            loss = loss + self.hparams.count_loss_weight * F.smooth_l1_loss(expected, self.count_values[y])
        self.metrics[f"{stage}_split"].update(logits.argmax(1), y)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=stage != "train",
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        # returned so callbacks (the debuggers) see each validation batch's loss
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.calibrated_logits(x).softmax(1)

    def _gather_collected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's collected logits and labels (ranks may hold different numbers of images)."""
        logits = (
            torch.cat([x for x, _ in self._collected]) if self._collected else torch.zeros(0, self.counts.num_classes)
        )
        labels = torch.cat([y for _, y in self._collected]) if self._collected else torch.zeros(0, dtype=torch.long)
        self._collected = []
        if self.trainer is None or self.trainer.world_size == 1:
            return logits.cpu(), labels.cpu()
        sizes = self.all_gather(torch.tensor(len(labels), device=self.device)).view(-1)
        top = int(sizes.max())
        pad = top - len(labels)
        logits = F.pad(logits.to(self.device), (0, 0, 0, pad))
        labels = F.pad(labels.to(self.device), (0, pad))
        all_logits, all_labels = self.all_gather(logits), self.all_gather(labels)  # world x top x ...
        keep = [slice(0, int(n)) for n in sizes]
        return (
            torch.cat([all_logits[r][k] for r, k in enumerate(keep)]).cpu(),
            torch.cat([all_labels[r][k] for r, k in enumerate(keep)]).cpu(),
        )

    def calibration_report(self, logits: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict:
        """ECE before and after the temperature, and the reliability diagram's bins after it."""
        calibrated = (logits / self.temperature).softmax(1)
        return {
            f"{prefix}/ece": expected_calibration_error(calibrated, labels),
            f"{prefix}/ece_uncalibrated": expected_calibration_error(logits.softmax(1), labels),
            f"{prefix}/temperature": self.temperature,
            f"{prefix}/reliability": reliability_bins(calibrated, labels),
        }

    def _epoch_end(self, stage: str) -> dict:
        metrics = self.metrics[f"{stage}_split"]
        values = metrics.compute()
        metrics.reset()
        scalars = {k: v for k, v in values.items() if v.ndim == 0}
        shown = {k: v for k, v in scalars.items() if k in PROGRESS_BAR}
        self.log_dict({f"{stage}/{k}": v for k, v in shown.items()}, prog_bar=stage == "val")
        self.log_dict({f"{stage}/{k}": v for k, v in scalars.items() if k not in shown})
        per_class, names = values["acc_per_class"], metrics.answer_set.names  # train's: with learn_overflow, 6+ too
        self.log_dict({f"{stage}/acc_count_{metric_name(n)}": per_class[i] for i, n in enumerate(names)})
        return values

    def on_train_epoch_end(self):
        self._epoch_end("train")

    def on_validation_epoch_end(self):
        self._epoch_end("val")
        if self.collecting:  # a calibration pass (training.calibrate): fit the temperature on every rank
            logits, labels = self._gather_collected()
            fitted = fit_temperature(logits, labels)
            # The likelihood-optimal temperature can still spread confidences worse (an underfit model
            # trained with label smoothing is sharpened, then overconfident): keep it only where it
            # lowers the validation ECE, else leave the logits as they are.
            before = expected_calibration_error(logits.softmax(1), labels)
            after = expected_calibration_error((logits / fitted).softmax(1), labels)
            self.set_temperature(fitted if after <= before else 1.0)
            self.calibration = {**self.calibration_report(logits, labels, "val"), "val/temperature_fitted": fitted}

    def on_test_epoch_start(self):
        self.collecting = True

    def on_test_epoch_end(self):
        v = self._epoch_end("test")
        self.collecting = False
        logits, labels = self._gather_collected()
        confusion = v["confusion"].long()
        self.test_results = {
            "test/acc": v["acc"].item(),
            # rmse, mae, off_by_one: over the test/exact_bins bins whose true and predicted classes are
            # both exact counts (every bin without the overflow class)
            "test/rmse": v["rmse"].item(),
            "test/mae": v["mae"].item(),
            "test/off_by_one": v["off_by_one"].item(),
            "test/exact_bins": int(v["exact_bins"].item()),
            **{f"test/{k}": v[k].item() for k in OPTIONAL_FIGURES if k in v},
            "test/acc_per_class": {n: v["acc_per_class"][i].item() for i, n in enumerate(self.counts.names)},
            "test/confusion": confusion.tolist(),  # rows: true class, columns: predicted class (class_names)
            "test/images": int(confusion.sum().item()),
            "test/majority_rate": (confusion.sum(1).max() / confusion.sum().clamp(min=1)).item(),
            **self.calibration_report(logits, labels, "test"),
            "classes": self.classes,
            "overflow": self.counts.overflow,
            "class_names": self.counts.names,
        }
        if self.counts.overflow:
            self.test_results["notes"] = {
                "test/rmse, test/mae, test/off_by_one": f"over the test/exact_bins bins whose true and predicted "
                f"classes are both exact counts (neither is {self.counts.names[-1]})"
            }

    def on_train_start(self) -> None:
        """A resumed run restores its schedule's state, ``T_max`` included. Resumed with more epochs than it was
        trained for (``T_max`` = ``trainer.max_epochs`` in its config), a cosine would climb back to the full rate
        and end there; it is refitted to end at the epochs in force, as if configured so from the start. (After
        the callbacks' hook: a time budget that keeps its cut on a resume has set those epochs already.)"""
        configured = getattr(self.scheduler_factory, "keywords", {}).get("T_max")
        epochs = self.trainer.max_epochs
        for config in self.trainer.lr_scheduler_configs:
            s = config.scheduler
            if isinstance(s, CosineAnnealingLR) and config.interval == "epoch" and configured == epochs != s.T_max:
                log.info(
                    "resumed with %d epochs: the cosine schedule of %d epochs now ends at %d", epochs, s.T_max, epochs
                )
                refit_cosine(s, epochs)

    def configure_optimizers(self):
        factory = self.optimizer_factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }
