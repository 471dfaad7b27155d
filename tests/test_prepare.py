"""`bincount prepare` on real ABID originals: split folders, manifest, reruns, bad images, training on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bincount.cli import main
from bincount.data.prepare import REPORT_NAME, SPLIT_DIRS, prepare
from bincount.data.records import read_abid
from bincount.data.split import read_manifest, split_records
from bincount.layout import MANIFEST as MANIFEST_NAME
from bincount.training import train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice


@pytest.fixture
def originals(abid, tmp_path) -> Path:
    """8 full-resolution originals per count 1-5, plus 3 bins of 6 items, in a folder of their own."""
    raw = abid / "raw"
    ids = ids_by_count(raw, 8) + ids_by_count(raw, 3, counts=(6,))
    return make_abid_slice(raw, tmp_path / "raw", ids)


def images_in(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for d in SPLIT_DIRS.values() for p in (out / d).glob("*/*")}


def expected_layout(out: Path) -> set[str]:
    return {f"{SPLIT_DIRS[split]}/{label}/{i}.jpg" for i, label, split in read_manifest(out / MANIFEST_NAME)}


def test_prepare_writes_resized_split_folders_that_read_back_as_the_same_records(originals, tmp_path):
    out = tmp_path / "prepared"
    report = prepare(originals, out, size=48, classes=[1, 2, 3, 4, 5], workers=2)
    assert report["resized"] == 40 and report["images"] == {"train": 30, "val": 5, "test": 5}
    assert report["skipped"]["by_reason"] == {"count not in classes": 3}
    assert set(images_in(out)) == expected_layout(out)
    for p in images_in(out).values():
        with Image.open(p) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (48, 48), "RGB")

    source, _ = read_abid(originals, classes=[1, 2, 3, 4, 5])
    prepared, skipped = read_abid(out)  # the output is itself a data.root
    assert skipped.total == 0
    assert {(r.id, r.count, r.skus) for r in prepared} == {(r.id, r.count, r.skus) for r in source}
    # the manifest is the split training would draw itself from the originals with the same seed
    splits = split_records(source, seed=42)
    assert sorted(read_manifest(out / MANIFEST_NAME)) == sorted(
        (r.id, r.count, s) for s, rs in splits.items() for r in rs
    )
    assert json.loads((out / REPORT_NAME).read_text())["images_per_s"] > 0


def test_parallel_prepare_writes_the_same_bytes_as_one_process(originals, tmp_path):
    prepare(originals, tmp_path / "one", size=40, workers=1)
    prepare(originals, tmp_path / "two", size=40, workers=2)
    one, two = images_in(tmp_path / "one"), images_in(tmp_path / "two")
    assert set(one) == set(two) and len(one) == 43
    assert all(one[k].read_bytes() == two[k].read_bytes() for k in one)


def test_a_rerun_does_no_work_for_unchanged_inputs_and_follows_changes(originals, tmp_path):
    out = tmp_path / "prepared"
    prepare(originals, out, size=32, workers=2)
    stamps = {k: p.stat().st_mtime_ns for k, p in images_in(out).items()}

    again = prepare(originals, out, size=32, workers=2)
    assert (again["resized"], again["unchanged"], again["moved"], again["removed"]) == (0, 43, 0, 0)
    assert {k: p.stat().st_mtime_ns for k, p in images_in(out).items()} == stamps  # nothing rewritten

    some = sorted((originals / "bin-images").iterdir())[0]
    other = sorted((originals / "bin-images").iterdir())[-1]
    some.unlink()
    shutil.copy(other, some)  # a changed source image
    changed = prepare(originals, out, size=32, workers=2)
    assert changed["resized"] == 1 and changed["unchanged"] == 42

    reshuffled = prepare(originals, out, size=32, seed=7, workers=2)  # another split: moved, not re-encoded
    assert reshuffled["resized"] == 0 and reshuffled["moved"] > 0
    assert set(images_in(out)) == expected_layout(out)

    fewer = prepare(originals, out, size=32, seed=7, classes=[1, 2], workers=2)
    assert fewer["removed"] == 27 and set(images_in(out)) == expected_layout(out)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["1", "2"]  # no empty class folders left
    assert len(list((out / "metadata").glob("*.json"))) == 16

    bigger = prepare(originals, out, size=40, seed=7, classes=[1, 2], workers=2)  # a new size redoes all
    assert bigger["resized"] == 16


def test_an_unreadable_image_is_reported_and_left_out(originals, tmp_path):
    victim = sorted((originals / "bin-images").iterdir())[3]
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[:200])  # truncated well inside the header
    out = tmp_path / "prepared"
    report = prepare(originals, out, size=32, workers=2)
    [(reason, ids)] = report["skipped"]["ids"].items()
    assert reason.startswith("unreadable image") and ids == [victim.stem]
    assert victim.stem not in {i for i, _, _ in read_manifest(out / MANIFEST_NAME)}
    assert not any(p.stem == victim.stem for p in images_in(out).values())
    assert not (out / "metadata" / f"{victim.stem}.json").exists()
    assert sum(report["images"].values()) == 42


def test_training_runs_on_the_prepared_folder_with_its_manifest(originals, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["prepare", str(originals), str(out), "--size", "32", "--classes", "1..5", "--workers", "2"]) == 0
    assert f"data.manifest={out / MANIFEST_NAME}" in capsys.readouterr().out
    run = tmp_path / "run"
    cfg = compose_cfg(
        "train",
        TINY + [f"data.root={out}", f"data.manifest={out / MANIFEST_NAME}", "trainer.max_epochs=1", "logger=csv"],
        run,
    )
    train(cfg)
    assert (run / MANIFEST_NAME).read_text() == (out / MANIFEST_NAME).read_text()
    assert json.loads((run / "metrics.json").read_text())["test/images"] == 5


def test_packed_format_holds_the_same_bins_and_split_as_the_jpeg_folders(originals, tmp_path):
    from bincount.data.packed import read_packed

    prepare(originals, tmp_path / "jpeg", size=32, classes=[1, 2, 3, 4, 5], workers=2)
    report = prepare(originals, tmp_path / "packed", size=32, fmt="packed", classes=[1, 2, 3, 4, 5], workers=2)
    records, _ = read_packed(tmp_path / "packed")
    assert report["images"] == {"train": 30, "val": 5, "test": 5} and len(records) == 40
    assert (tmp_path / "packed" / MANIFEST_NAME).read_text() == (tmp_path / "jpeg" / MANIFEST_NAME).read_text()
    packed_at = (tmp_path / "packed" / "images.npy").stat().st_mtime_ns
    again = prepare(originals, tmp_path / "packed", size=32, fmt="packed", classes=[1, 2, 3, 4, 5], workers=2)
    assert (again["resized"], again["unchanged"]) == (0, 40)  # unchanged sources: not packed again
    assert (tmp_path / "packed" / "images.npy").stat().st_mtime_ns == packed_at
