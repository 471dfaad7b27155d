"""``train(cfg)`` and ``evaluate(cfg)``: the one training function every launcher runs (a local run,
each rank of a DDP job, a SageMaker container, a sweep trial) and its evaluation twin."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bincount.config import check_config
from bincount.data.datamodule import BinDataModule
from bincount.data.split import SplitRow, changed_splits, read_manifest
from bincount.errors import BincountError
from bincount.layout import CONFUSION, MANIFEST, METRICS, RELIABILITY, manifest_of_checkpoint, run_of_checkpoint
from bincount.model.checkpoint import load_checkpoint
from bincount.model.counter import CountingModel
from bincount.reports.plots import plot_confusion, plot_reliability

log = logging.getLogger(__name__)
# Lightning's own loader code calls torch's LeafSpec, which torch 2.14 deprecates: not ours to fix, nothing wrong
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# bf16 autocast (the quick start's on a CPU with AMX): Lightning's model summary only says it counts the size in fp32
warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def _one_console_for_lightning() -> None:
    """Lightning gives its ``lightning`` logger a console handler of its own; where the root logger has handlers
    (a Hydra app's: the console and the run's log file) each of Lightning's lines would print twice: root's do."""
    if not logging.getLogger().handlers:
        return
    own = logging.getLogger("lightning")
    for handler in own.handlers[:]:
        if type(handler) is logging.StreamHandler:
            own.removeHandler(handler)


def _instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group such as callbacks or logger."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def _write_results(results: dict, out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).write_text(json.dumps(results, indent=2))
    plot_confusion(results["test/confusion"], results.get("class_names", results["classes"]), out / CONFUSION, title)
    plot_reliability(
        results["test/reliability"],
        out / RELIABILITY,
        f"{title}: calibration",
        results["test/ece"],
        results["test/ece_uncalibrated"],
    )
    exact = results.get("test/exact_bins", results["test/images"])
    log.info(
        "test: acc %.3f%s, rmse %.3f, mae %.3f%s, ECE %.3f (%.3f before calibration) (n=%d, majority-class "
        "rate %.3f)%s -> %s",
        results["test/acc"],
        f" ({results['test/acc_exact']:.3f} over the bins of an exact true count)"
        if "test/acc_exact" in results
        else "",
        results["test/rmse"],
        results["test/mae"],
        f" (over the {exact} bins with exact true and predicted counts)" if exact != results["test/images"] else "",
        results["test/ece"],
        results["test/ece_uncalibrated"],
        results["test/images"],
        results["test/majority_rate"],
        "".join(
            f"; {name} precision {results[f'test/{name}_precision']:.3f}, recall {results[f'test/{name}_recall']:.3f}"
            for name in ("overflow", "empty")
            if f"test/{name}_recall" in results
        ),
        out / METRICS,
    )


def calibrate(trainer: L.Trainer, model: CountingModel, datamodule: L.LightningDataModule, ckpt: str | None) -> dict:
    """Fit the temperature on the validation split with the weights of ``ckpt`` (the best checkpoint),
    and write it into that checkpoint, so eval, predict, export and serve all apply it."""
    model.collecting = True
    try:
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    finally:
        model.collecting = False
    report = dict(model.calibration or {})
    log.info(
        "calibration: temperature %.3f fitted on %d validation images, %s; val ECE %.3f -> %.3f",
        report.get("val/temperature_fitted", float("nan")),
        sum(b["images"] for b in report.get("val/reliability", [])),
        "kept" if model.temperature != 1.0 else "not kept (it did not lower the validation ECE)",
        report.get("val/ece_uncalibrated", float("nan")),
        report.get("val/ece", float("nan")),
    )
    if ckpt and trainer.is_global_zero:
        write_temperature(ckpt, model.temperature)
    trainer.strategy.barrier()
    return report


def write_temperature(ckpt: str | Path, temperature: float) -> None:
    """Set the calibration temperature in a checkpoint's hyper-parameters (atomically)."""
    import torch

    ckpt = Path(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["temperature"] = float(temperature)
    tmp = ckpt.with_name(f".{ckpt.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt)


def train(cfg: DictConfig) -> float | None:
    """Fit, checkpoint the best model by the optimized metric, test it, write metrics and plots.

    With ``ckpt_path`` it resumes that checkpoint's run: the same split (stored in the checkpoint), the
    history and debugger records going on; ``RUN/checkpoints/last.ckpt`` continues in ``RUN`` (see
    conf/hydra/default.yaml). Returns the value of ``cfg.optimized_metric`` at the best checkpoint (for sweeps).
    """
    started = time.time()
    _one_console_for_lightning()
    check_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    resume = cfg.get("ckpt_path")
    overrides = {"fixed_split": resume_split(cfg, Path(resume))} if resume else {}
    datamodule = instantiate(cfg.data, **overrides)
    model = instantiate(cfg.model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    profiler = instantiate(cfg.profiler) if cfg.get("profiler") else None
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, profiler=profiler)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    with warnings.catch_warnings():
        if resume:  # the run's own checkpoint folder, continued on purpose
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb and ckpt_cb.best_model_path else None
    score = ckpt_cb.best_model_score if ckpt_cb else None
    results: dict = {}
    calibration = calibrate(trainer, model, datamodule, best) if cfg.get("calibrate", True) else {}
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best)
        results = dict(model.test_results or {})
    results.update({k: v for k, v in calibration.items() if k != "val/reliability"})
    if trainer.is_global_zero:
        results.update(
            {
                "best_checkpoint": best,
                "best_val": {cfg.optimized_metric: float(score) if score is not None else None},
                "epochs": trainer.current_epoch,
                "seconds": round(time.time() - started, 1),
                "data": datamodule.data_summary(),
            }
        )
        if "test/confusion" in results:
            _write_results(results, out, f"{cfg.model.backbone} test")
        else:
            (out / METRICS).write_text(json.dumps(results, indent=2))
    if score is not None:
        return float(score)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    return float(metric) if metric is not None else None


def resume_split(cfg: DictConfig, ckpt_path: Path) -> list[SplitRow]:
    """The split a resumed run keeps: the one stored in its checkpoint (older checkpoints: the run
    folder's manifest, or ``data.manifest``). Never a new one: a bin of the validation or test data
    must not move into training. The checkpoint is read safely (``load_checkpoint``) first."""
    ckpt = load_checkpoint(ckpt_path, "ckpt_path")
    stored = BinDataModule.split_in_checkpoint(ckpt)
    log.info("resuming %s at epoch %s, step %s", ckpt_path, ckpt.get("epoch"), ckpt.get("global_step"))
    given = cfg.data.get("manifest")
    if stored is None:
        manifest = given or manifest_of_checkpoint(ckpt_path)
        if manifest is None:
            raise BincountError(
                f"ckpt_path: {ckpt_path} stores no split and there is no {MANIFEST} in its run "
                "folder; pass data.manifest=RUN/split_manifest.csv of the run it came from "
                "(a resumed run keeps its split)"
            )
        return read_manifest(manifest)
    if given:
        changed = changed_splits(stored, read_manifest(given))
        if changed:
            raise BincountError(
                f"data.manifest: {len(changed)} bins are in another split than in the checkpoint "
                f"being resumed ({', '.join(changed[:5])}); a resumed run keeps its split: "
                "drop data.manifest"
            )
    return stored


# the reason eval leaves a bin out when its checkpoint trained on it (data report, skipped)
SEEN_IN_TRAINING = "in the checkpoint's training or validation split"


def training_ids(ckpt: dict, ckpt_path: Path) -> set[str] | None:
    """Ids of the training and validation splits a checkpoint was trained on: the run's manifest beside it,
    else the split stored in the checkpoint; None when neither is there."""
    manifest = manifest_of_checkpoint(ckpt_path)
    rows = read_manifest(manifest) if manifest is not None else BinDataModule.split_in_checkpoint(ckpt)
    return None if rows is None else {i for i, _, split in rows if split != "test"}


def _folder_names(root) -> str:
    return "+".join(Path(r).name for r in ([root] if isinstance(root, str) else root))


def evaluate(cfg: DictConfig) -> dict:
    """Test a checkpoint on a folder (or a list of folders). Classes (with the overflow class) and image
    size come from the checkpoint; the split is ``data.split=all`` (every labelled image) or, by default,
    the test part of the training run's manifest, found beside the checkpoint, so the test metrics of
    training are reproduced. On any other split, bins the checkpoint trained or validated on (same id) are
    left out unless ``exclude_training_ids=false``: metrics.json says how many
    (``excluded_overlap_with_training``) and how many evaluated bins still overlap (``overlap_with_training``)."""
    _one_console_for_lightning()
    check_config(cfg)
    ckpt = Path(cfg.ckpt_path)
    state = load_checkpoint(ckpt, "ckpt_path")  # refuses, in one line, a file that would unpickle objects
    model = CountingModel.load_from_checkpoint(
        ckpt, map_location="cpu", weights_only=True, pretrained=False, weights=None
    )
    out = Path(cfg.paths.output_dir)
    overrides = {
        "classes": model.classes,
        "overflow": model.counts.overflow,
        "image_size": model.hparams.image_size,
    }
    train_manifest = manifest_of_checkpoint(ckpt)
    own_split = cfg.data.split != "all" and not cfg.data.get("manifest")
    if own_split:
        if train_manifest is None:
            raise BincountError(
                f"data.split={cfg.data.split}: no {MANIFEST} in {run_of_checkpoint(ckpt)}; "
                "pass data.manifest=PATH or data.split=all"
            )
        overrides["manifest"] = str(train_manifest)
        # the run's own split names its training-only bins too: read them back into train, as trained
        overrides["learn_overflow"] = bool(model.hparams.get("learn_overflow", False))
    seen = training_ids(state, ckpt)
    excluding = bool(seen) and not own_split and cfg.get("exclude_training_ids", True)
    if excluding:
        overrides["exclude"] = {SEEN_IN_TRAINING: sorted(seen)}
    datamodule = instantiate(cfg.data, **overrides)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=_instantiate_group(cfg.get("callbacks")))
    trainer.test(model, datamodule=datamodule)
    results = dict(model.test_results)
    results.update({"checkpoint": str(ckpt), "data": datamodule.data_summary()})
    if seen is not None:
        # Evaluating on images the model trained on inflates every figure: leave them out, or say so.
        overlap = sorted(r.id for r in datamodule.splits["test"] if r.id in seen)
        results["overlap_with_training"] = len(overlap)
        results["excluded_overlap_with_training"] = datamodule.excluded(SEEN_IN_TRAINING)
        if results["excluded_overlap_with_training"]:
            log.info(
                "left out %d bins of the checkpoint's training or validation split (ids match; "
                "exclude_training_ids=false keeps them)",
                results["excluded_overlap_with_training"],
            )
        if overlap:
            log.warning(
                "%d of %d evaluated images were in the training or validation split of this "
                "checkpoint (ids match); their figures are optimistic",
                len(overlap),
                results["test/images"],
            )
    if trainer.is_global_zero:
        _write_results(results, out, f"{model.hparams.backbone} on {_folder_names(cfg.data.root)}")
    return results
