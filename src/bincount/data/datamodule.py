"""The LightningDataModule: records -> split -> datasets -> loaders, with a data report and the
split manifest written into the run directory."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from bincount.counts import CountClasses
from bincount.data.aux_targets import aux_matrix, check_aux_targets
from bincount.data.dataset import BinImageDataset
from bincount.data.gpu_augment import eval_batch_transform, train_batch_transform
from bincount.data.packed import PackedDataset, RowsDataset, decode_in_memory, is_packed, keep_batch, read_packed
from bincount.data.records import BinRecord, SkipReport, counts_per_class, read_abid_folders
from bincount.data.split import (
    SPLITS,
    SplitRow,
    apply_manifest,
    apply_split,
    changed_splits,
    split_records,
    split_rows,
    write_manifest,
)
from bincount.data.transforms import eval_transform, train_transform
from bincount.errors import BincountError
from bincount.layout import DATA_REPORT, MANIFEST

log = logging.getLogger(__name__)


def _inside(path: str, folder: str) -> bool:
    return Path(path).is_relative_to(Path(folder))


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation under DDP: every image on exactly one rank. Lightning's default sampler pads the
    split to a multiple of the world size, so some images would be counted twice in test metrics."""

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class BinDataModule(L.LightningDataModule):
    """``root``: one ABID-layout (or packed) folder, or a list of ABID-layout folders read as one dataset
    (an id in two of them is an error). ``classes`` and ``overflow`` are the answer set
    (``CountClasses``): bins of more than ``max(classes)`` items get the overflow class when ``overflow``
    is on, else they are left out and reported, unless ``learn_overflow``: then they still teach the network, as
    one more class of the training split only (the model never answers it; none enters validation or test, so
    those splits are the very ones of the same classes without it). ``aux_targets``: names of
    ``bincount.data.aux_targets`` whose values training batches carry as a third item. ``exclude`` (reason -> ids) leaves bins out before the
    split, each reported under its reason (eval: the bins a checkpoint trained on)."""

    def __init__(
        self,
        root: str | Sequence[str],
        classes: Sequence[int] = (1, 2, 3, 4, 5),
        overflow: bool = False,
        learn_overflow: bool = False,
        file_list: str | None = None,
        split: str = "stratified",
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 42,
        manifest: str | None = None,
        limit_per_class: int | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        pin_memory: bool = False,
        augment: dict | None = None,
        eval_crop_pct: float = 1.0,
        check_images: bool = True,
        in_memory: bool = False,
        output_dir: str | None = None,
        download_to: str | None = None,
        fixed_split: Sequence[SplitRow] | None = None,
        exclude: Mapping[str, Sequence[str]] | None = None,
        aux_targets: Sequence[str] = (),
    ):
        super().__init__()
        roots = [str(r) for r in root] if isinstance(root, Sequence) and not isinstance(root, str) else [root]
        if not roots or not all(roots):
            raise BincountError(
                "data.root is empty: set data.root=DIR (an ABID-layout folder, or a list [DIR1,DIR2]), "
                "or run `bincount download` first"
            )
        try:
            self.counts = CountClasses(classes, overflow)
        except BincountError as e:
            raise BincountError(f"data.{e}") from None
        if learn_overflow and overflow:
            raise BincountError(
                "data.learn_overflow: the overflow class is already answered (data.overflow=true); learn_overflow "
                "is for a model that answers only the exact counts and still learns from bins above them"
            )
        self.learn_overflow = bool(learn_overflow)
        # the classes labels come in: the answer set, plus "more than K" for training only where learn_overflow
        self.training_counts = CountClasses(classes, overflow or learn_overflow)
        # one folder stays a string (as before: data reports, titles); several are a list
        self.root = roots[0] if len(roots) == 1 else roots
        self.roots = roots
        self.classes = list(self.counts.exact)
        self.aux_targets = check_aux_targets(aux_targets)
        self.exclude = {str(reason): {str(i) for i in ids} for reason, ids in (exclude or {}).items()}
        self.file_list, self.split, self.ratios, self.seed = file_list, split, list(ratios), seed
        self.manifest, self.limit_per_class = manifest, limit_per_class
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory, self.augment, self.eval_crop_pct = pin_memory, dict(augment or {}), eval_crop_pct
        self.check_images, self.in_memory, self.output_dir = check_images, in_memory, output_dir
        self.download_to = download_to
        # the split of a run being resumed (train(cfg) passes it): it overrides split, seed and manifest
        self.fixed_split = [tuple(row) for row in fixed_split] if fixed_split is not None else None
        self.splits: dict[str, list[BinRecord]] = {}
        self.report: SkipReport | None = None
        # A packed root (bincount.data.packed) or in_memory=true (every image decoded once into RAM at
        # image_size) yields whole uint8 batches, augmented and normalised on the model's device.
        self.packed = False
        self.memory: tuple | None = None  # in memory: (images array, id -> row)
        self.batch_transforms = {
            "train": train_batch_transform(image_size, **self.augment),
            "eval": eval_batch_transform(image_size, eval_crop_pct),
        }

    # -- records and split ------------------------------------------------------------------
    def prepare_data(self) -> None:
        """First run: fill the default data folder from the public bucket (once per node)."""
        if self.download_to and len(self.roots) == 1 and Path(self.root).resolve() == Path(self.download_to).resolve():
            from bincount.data.download import ensure_dataset

            ensure_dataset(self.root, self.file_list)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        packed = [r for r in self.roots if is_packed(r)]
        if packed and len(self.roots) > 1:
            raise BincountError(
                f"data.root: {packed[0]} is a packed folder; a packed folder is read alone (data.root=DIR), "
                "a list of folders takes ABID-layout folders (pack them together with `bincount prepare`)"
            )
        self.packed = bool(packed)
        if self.packed:
            records, self.report = read_packed(self.root, self.training_counts, self.file_list)
        else:
            records, self.report = read_abid_folders(
                self.roots, self.training_counts, self.file_list, self.check_images
            )
        records = self._leave_out(records)
        if not records:
            raise BincountError(
                f"data.root: no usable labelled images with counts {self.counts} in {', '.join(self.roots)}; "
                f"skipped: {self.report.summary()}"
            )
        if self.fixed_split is not None or self.manifest:
            if self.fixed_split is not None:
                self.splits, misfits = apply_split(records, self.fixed_split, "the split of the resumed run")
            else:
                self.splits, misfits = apply_manifest(records, self.manifest)
            reported = {i for ids in self.report.skipped.values() for i in ids}  # already skipped, with the reason
            for reason, ids in misfits.items():
                for bin_id in ids:
                    if bin_id not in reported:
                        self.report.add(reason, bin_id)
        else:
            # the training-only class sorts last, so the other classes' split is the one they get without it
            train_only = [self.training_counts.overflow_index] if self.learn_overflow else []
            self.splits = split_records(
                records, self.split, self.ratios, self.seed, self.limit_per_class, self.class_of, train_only
            )
        self._write_outputs()
        if self.in_memory and not self.packed:
            used = [r for s in SPLITS for r in self.splits.get(s, [])]
            self.memory = (decode_in_memory(used, self.image_size), {r.id: i for i, r in enumerate(used)})

    def class_of(self, record: BinRecord) -> int:
        """A record's class index (its count's, with every count above K in the overflow class, answered or
        learnt only)."""
        return self.training_counts.index(record.count)

    def _leave_out(self, records: list[BinRecord]) -> list[BinRecord]:
        """Records without the ids of ``exclude``, each left-out id reported under its reason."""
        if not self.exclude:
            return records
        kept = []
        for r in records:
            reason = next((why for why, ids in self.exclude.items() if r.id in ids), None)
            if reason is None:
                kept.append(r)
            else:
                self.report.add(reason, r.id)
        return kept

    def excluded(self, reason: str) -> int:
        """How many bins ``exclude`` left out under this reason."""
        return len(self.report.skipped.get(reason, ())) if self.report else 0

    @property
    def batched(self) -> bool:
        """Whether loaders deliver uint8 batches that on_after_batch_transfer turns into model input."""
        return self.packed or self.memory is not None

    # -- the split travels in checkpoints, so a resumed run keeps it (train(cfg) reads it back) --------
    def state_dict(self) -> dict:
        return {"split": [list(row) for row in split_rows(self.splits)]} if self.splits else {}

    def load_state_dict(self, state: dict) -> None:
        """Lightning calls this when resuming, after setup() has split the data: refuse a split that
        differs from the checkpoint's, since it could move validation or test bins into training."""
        stored = state.get("split")
        if stored is None or not self.splits:
            return
        changed = changed_splits([tuple(r) for r in stored], split_rows(self.splits))
        if changed:
            raise BincountError(
                f"resume: {len(changed)} bins are in another split than in the checkpoint "
                f"({', '.join(changed[:5])}); a resumed run keeps its split: resume with "
                "`python train.py ckpt_path=CKPT`, or pass "
                "fixed_split=BinDataModule.split_in_checkpoint(ckpt)"
            )

    @classmethod
    def split_in_checkpoint(cls, checkpoint: dict) -> list[SplitRow] | None:
        """The split a checkpoint of this data module was trained on (None for older checkpoints)."""
        stored = (checkpoint.get(cls.__qualname__) or {}).get("split")
        return [(str(i), int(label), str(split)) for i, label, split in stored] if stored is not None else None

    def _write_outputs(self) -> None:
        summary = self.data_summary()
        skipped = summary["skipped"]
        where = Path(self.output_dir) / DATA_REPORT if self.output_dir else None
        log.info(
            "data: %s (classes %s): %s images (train/val/test %s)%s",
            ", ".join(self.roots),
            self.counts,
            sum(summary["images"].values()),
            "/".join(str(n) for n in summary["images"].values()),
            f"; skipped {skipped['total']} ({', '.join(f'{n} {r}' for r, n in skipped['by_reason'].items())}), "
            f"listed in {where or 'the data report'}"
            if skipped["total"]
            else "",
        )
        if not self.output_dir or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        out = Path(self.output_dir)
        write_manifest(self.splits, out / MANIFEST)
        (out / DATA_REPORT).write_text(json.dumps(summary, indent=2))

    def data_summary(self) -> dict:
        """The data report: folders, classes, images per split, per class (named as ``CountClasses.names``:
        ``"6+"`` for the overflow class) and per folder, and what was skipped."""
        used = [r for s in SPLITS for r in self.splits.get(s, [])]
        # the folder each image came from (a packed folder: that folder)
        per_root = Counter(next((root for root in self.roots if _inside(r.image, root)), self.roots[0]) for r in used)
        return {
            "root": self.root if isinstance(self.root, str) else list(self.root),
            "classes": self.classes,
            "overflow": self.counts.overflow,
            "class_names": self.counts.names,
            **(
                {"learn_overflow": True, "training_class_names": self.training_counts.names}
                if self.learn_overflow
                else {}
            ),
            "images": {s: len(self.splits.get(s, [])) for s in SPLITS},
            "per_class": {s: counts_per_class(self.splits.get(s, []), self.training_counts) for s in SPLITS},
            "images_per_root": {root: per_root.get(root, 0) for root in self.roots},
            "skipped": self.report.to_dict() if self.report else {"total": 0, "by_reason": {}, "ids": {}},
        }

    # -- loaders ----------------------------------------------------------------------------
    def dataset(self, split: str) -> BinImageDataset | RowsDataset:
        records = self.splits[split]
        # auxiliary targets teach the training split only: evaluation batches stay (images, labels)
        aux = aux_matrix(records, self.aux_targets) if self.aux_targets and split == "train" else None
        if self.packed:
            return PackedDataset(self.root, records, self.training_counts, aux=aux)
        if self.memory is not None:
            return RowsDataset(*self.memory, records, self.training_counts, aux=aux)
        if split == "train":
            transform = train_transform(self.image_size, **self.augment)
        else:
            transform = eval_transform(self.image_size, self.eval_crop_pct)
        return BinImageDataset(records, self.training_counts, transform, decode_size=self.image_size, aux=aux)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if not len(ds):
            raise BincountError(
                f"data: the {split} split is empty (data.split={self.split}, "
                f"data.limit_per_class={self.limit_per_class}); use more images or other ratios"
            )
        sampler = None
        if not shuffle and self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(ds, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            # pinned pages only speed up copies to a GPU: without CUDA (resnet50 on ml.c5 CPUs) torch would
            # ignore them and warn on every loader
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # training drops a last partial batch: static shapes for torch.compile, and
            # never a batch of one for BatchNorm
            drop_last=shuffle and len(ds) > self.batch_size,
            collate_fn=keep_batch if self.batched else None,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Packed and in-memory batches reach the model's device as uint8: augment (when training) and
        normalise them there, the whole batch at once."""
        if not self.batched:
            return batch
        x, *labels = batch  # the labels, and in training the auxiliary targets
        training = self.trainer is not None and self.trainer.training
        return self.batch_transforms["train" if training else "eval"](x), *labels

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
