"""The packed format on real ABID images: rows are exactly the JPEG path's resized images, records and
splits are the same as over the JPEG folder, loaders deliver every row once, the batched augmentation
matches torchvision's operations, and a training run works from a packed folder."""

import csv
import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from bincount.data.datamodule import BinDataModule
from bincount.data.gpu_augment import _GRAY, color_jitter_, eval_batch_transform, geometry, train_batch_transform
from bincount.data.images import load_rgb
from bincount.data.packed import IMAGES_NAME, INDEX_NAME, PackedDataset, keep_batch, pack_abid, read_packed
from bincount.data.records import read_abid
from bincount.data.transforms import eval_transform
from bincount.errors import BincountError
from bincount.training import train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice

SIZE = 48


@pytest.fixture(scope="module")
def raw_slice(abid, tmp_path_factory):
    """Full-resolution originals (counts 0-7, four each), one of count 1 truncated."""
    raw = abid / "raw"
    ids = ids_by_count(raw, 4, counts=(0, 1, 2, 3, 4, 5, 6, 7))
    root = make_abid_slice(raw, tmp_path_factory.mktemp("raw-slice"), ids)
    broken = root / "bin-images" / f"{ids[4]}.jpg"
    data = broken.read_bytes()
    broken.unlink()
    broken.write_bytes(data[: len(data) // 3])
    return root, ids


@pytest.fixture(scope="module")
def packed_raw(raw_slice, tmp_path_factory):
    root, _ = raw_slice
    return pack_abid(root, tmp_path_factory.mktemp("packed") / "raw", SIZE)


def test_rows_are_the_jpeg_paths_resized_images(raw_slice, packed_raw):
    root, _ = raw_slice
    records, _ = read_abid(root)
    index = json.loads((packed_raw / INDEX_NAME).read_text())
    images = np.load(packed_raw / IMAGES_NAME, mmap_mode="r")
    assert images.shape == (len(records), SIZE, SIZE, 3) and images.dtype == np.uint8
    assert index["ids"] == sorted(r.id for r in records)
    resize = v2.Resize((SIZE, SIZE), antialias=True)
    for r in records:
        row = images[index["ids"].index(r.id)]
        assert np.array_equal(row, np.asarray(resize(load_rgb(r.image, SIZE)))), r.id
        assert index["counts"][index["ids"].index(r.id)] == r.count


def test_records_and_skips_match_the_jpeg_folder(raw_slice, packed_raw):
    root, ids = raw_slice
    classes = [1, 2, 3, 4, 5]
    want, want_report = read_abid(root, classes)
    got, got_report = read_packed(packed_raw, classes)
    assert [(r.id, r.count) for r in got] == sorted((r.id, r.count) for r in want)
    assert got_report.summary() == want_report.summary()
    assert got_report.skipped["unreadable image (OSError)"] == [
        ids[4]
    ]  # the truncated JPEG, at pack time  # the truncated JPEG, at pack time


def test_packed_root_gives_the_same_split_and_manifest(small_abid, tmp_path):
    packed = pack_abid(small_abid, tmp_path / "packed", SIZE)
    manifests = []
    for root in (small_abid, packed):
        out = tmp_path / f"out-{root.name}"
        out.mkdir()
        dm = BinDataModule(str(root), image_size=SIZE, output_dir=str(out))
        dm.setup()
        manifests.append((out / "split_manifest.csv").read_text())
        assert dm.packed == (root == packed)
    assert manifests[0] == manifests[1]
    rows = list(csv.DictReader(manifests[1].splitlines()))
    assert len(rows) == 200 and {r["split"] for r in rows} == {"train", "val", "test"}


def test_pinned_memory_only_where_a_gpu_can_use_it(small_abid, tmp_path):
    """data.pin_memory (resnet50's) pins batches for copies to a GPU; without CUDA the loaders leave it off
    rather than have torch warn on every loader (a SageMaker job on ml.c5 CPUs)."""
    dm = BinDataModule(str(small_abid), image_size=SIZE, num_workers=0, pin_memory=True, output_dir=str(tmp_path))
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.pin_memory == torch.cuda.is_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, labels = next(iter(loader))
    assert images.shape[0] == labels.shape[0] > 0


def test_loader_workers_deliver_every_row_once_as_uint8_batches(packed_raw):
    records, _ = read_packed(packed_raw)
    classes = sorted({r.count for r in records})
    ds = PackedDataset(packed_raw, records, classes)
    images = np.load(packed_raw / IMAGES_NAME)
    want = sorted((int(images[i].sum()), classes.index(r.count)) for i, r in enumerate(records))
    loader = DataLoader(ds, batch_size=5, shuffle=True, num_workers=2, collate_fn=keep_batch)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, SIZE, SIZE) and len(x) <= 5
        assert x.is_contiguous(memory_format=torch.channels_last)
        seen += [(int(img.sum()), int(label)) for img, label in zip(x, y)]
    assert sorted(seen) == want


def test_eval_batch_transform_equals_the_eval_transform(raw_slice, packed_raw):
    records, _ = read_packed(packed_raw)
    ds = PackedDataset(packed_raw, records, sorted({r.count for r in records}))
    x, _ = ds.__getitems__(list(range(len(ds))))
    got = eval_batch_transform(SIZE)(x)
    by_id = {r.id: r for r in read_abid(raw_slice[0])[0]}
    rows = ds.rows[np.argsort(ds.rows, kind="stable")]
    index = json.loads((packed_raw / INDEX_NAME).read_text())
    want = torch.stack([eval_transform(SIZE)(load_rgb(by_id[index["ids"][i]].image, SIZE)) for i in rows])
    assert torch.allclose(got, want, atol=1e-5)


def test_geometry_is_exact_flips_and_torchvisions_rotation(packed_raw):
    x = torch.from_numpy(np.load(packed_raw / IMAGES_NAME)[:6]).permute(0, 3, 1, 2).float()
    no, yes, zero = torch.zeros(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool), torch.zeros(6)
    assert torch.equal(geometry(x, zero, no, no), x)
    assert torch.equal(geometry(x, zero, yes, no), x.flip(3))
    assert torch.equal(geometry(x, zero, no, yes), x.flip(2))
    assert torch.equal(geometry(x, torch.full((6,), math.pi / 2), no, no), torch.rot90(x, 1, (2, 3)))
    for degrees in (12.0, -7.5):
        got = geometry(x, torch.full((6,), math.radians(degrees)), no, no)
        want = TF.rotate(x, degrees, interpolation=InterpolationMode.NEAREST)
        assert (got == want).float().mean() > 0.999  # nearest-neighbour ties at a few pixels


def test_color_jitter_matches_torchvisions_adjustments(packed_raw):
    x = torch.from_numpy(np.load(packed_raw / IMAGES_NAME)[:4]).permute(0, 3, 1, 2).float() / 255
    factors, one = torch.tensor([0.8, 1.2, 1.0, 0.9]), torch.ones(4)
    weights = torch.tensor(_GRAY).view(1, 3, 1, 1)
    for name, adjust in (
        ("brightness", TF.adjust_brightness),
        ("contrast", TF.adjust_contrast),
        ("saturation", TF.adjust_saturation),
    ):
        args = {k: factors if k == name else one for k in ("brightness", "contrast", "saturation")}
        got = color_jitter_(x.clone(), **args, gray_weights=weights, top=1.0)
        want = torch.stack([adjust(x[i], float(factors[i])) for i in range(4)])
        assert torch.allclose(got, want, atol=1e-4), name


def test_train_batch_transform_draws_per_image(packed_raw):
    x = torch.from_numpy(np.load(packed_raw / IMAGES_NAME)[:16]).permute(0, 3, 1, 2)
    torch.manual_seed(0)
    a, b = train_batch_transform(SIZE)(x), train_batch_transform(SIZE)(x)
    plain = eval_batch_transform(SIZE)(x)
    assert a.shape == plain.shape == (16, 3, SIZE, SIZE) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    changed = [(a[i] - plain[i]).abs().max() > 0.1 for i in range(16)]
    assert all(changed)  # rotation and jitter are drawn for every image
    flips_only = train_batch_transform(SIZE, rotation=0, hflip=0.5, vflip=0, color_jitter=0)(x)
    mirrored = sum(torch.allclose(flips_only[i], plain[i].flip(2)) for i in range(16))
    assert 2 <= mirrored <= 14  # about half, per image


def test_bad_packed_folders_say_what_to_do(packed_raw, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(packed_raw, bad)
    (bad / IMAGES_NAME).unlink()
    with pytest.raises(BincountError, match="no images.npy"):
        read_packed(bad)
    (bad / INDEX_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BincountError, match="repack"):
        read_packed(bad)
    records, _ = read_packed(packed_raw)
    stranger = records[0].__class__(id="99999", image="x", count=records[0].count)
    with pytest.raises(BincountError, match="not in the packed folder"):
        PackedDataset(packed_raw, [stranger], [records[0].count])


def test_training_from_a_packed_folder(small_abid, tmp_path):
    packed = pack_abid(small_abid, tmp_path / "packed", 32)
    out = tmp_path / "run"
    score = train(compose_cfg("train", TINY + [f"data.root={packed}", "trainer.max_epochs=1"], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/images"] == 20 and 0 <= metrics["test/acc"] <= 1
    assert score == pytest.approx(metrics["best_val"]["val/acc"])
    assert metrics["data"]["root"] == str(packed)
