"""Resuming a run on real dev-224 images: `python train.py ckpt_path=RUN/checkpoints/last.ckpt` goes on in
RUN with the run's own split even after the data changed (bins removed and added), never moves a
validation or test bin into training, and leaves history, curves and debugger records covering the whole
run exactly once, also after a crash that left records past the checkpoint."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from bincount.data.datamodule import BinDataModule
from bincount.data.split import ABSENT, UNLISTED, read_manifest
from bincount.errors import BincountError
from bincount.paths import PROJECT_ROOT
from bincount.training import resume_split, train
from conftest import TINY, compose_cfg, ids_by_count, make_abid_slice

RUN_OPTIONS = TINY + ["data.batch_size=16", "callbacks.debugger.save_interval=2", "logger=csv"]


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train(run, folder, *extra):
    return train(compose_cfg("train", RUN_OPTIONS + [f"data.root={folder}", *extra], run))


def test_resume_keeps_the_split_when_the_data_changed_and_the_records_cover_the_run(dev224, tmp_path):
    ids = ids_by_count(dev224, 12)  # 60 bins: 50 train, 5 val, 5 test
    extra_ids = [i for i in ids_by_count(dev224, 14) if i not in ids][:3]
    folder = make_abid_slice(dev224, tmp_path / "abid", ids)
    run = tmp_path / "run"
    _train(run, folder, "trainer.max_epochs=2", "test=false")
    first = {i: (label, split) for i, label, split in read_manifest(run / "split_manifest.csv")}
    epoch1 = run / "checkpoints" / "epoch1.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", epoch1)

    # a third epoch, then a "crash": the run is resumed from the epoch-1 checkpoint, so the records
    # of epoch 2 on disk are past the checkpoint and must not appear twice
    _train(run, folder, "trainer.max_epochs=3", "test=false", f"ckpt_path={run}/checkpoints/last.ckpt")
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [0, 1, 2]

    # meanwhile the data changed: 6 bins gone (from every split), 3 new ones
    by_split = {s: sorted(i for i, (_, sp) in first.items() if sp == s) for s in ("train", "val", "test")}
    removed = by_split["train"][:2] + by_split["val"][:2] + by_split["test"][:2]
    for i in removed:
        (folder / "bin-images" / f"{i}.jpg").unlink()
        (folder / "metadata" / f"{i}.json").unlink()
    make_abid_slice(dev224, folder, extra_ids)

    _train(run, folder, "trainer.max_epochs=4", f"ckpt_path={epoch1}")

    after = {i: (label, split) for i, label, split in read_manifest(run / "split_manifest.csv")}
    assert set(after) == set(first) - set(removed)  # no bin re-split, none added
    assert all(after[i] == first[i] for i in after)  # so no validation or test bin went into training
    report = json.loads((run / "data_report.json").read_text())["skipped"]["ids"]
    assert report[ABSENT] == sorted(removed)
    assert report[UNLISTED] == sorted(extra_ids)

    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all("train/loss" in h and "val/acc" in h for h in history)
    assert (run / "curves.png").is_file()

    steps = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    losses = _jsonl(run / "debugger" / "losses.jsonl")
    assert [r["step"] for r in losses if r["mode"] == "train"] == list(range(steps))  # every step, once
    evals = sorted({r["step"] for r in losses if r["mode"] == "eval"})
    assert len(evals) == 4 and evals[-1] == steps  # one validation per epoch
    tensors = _jsonl(run / "debugger" / "tensors.jsonl")
    keys = [(r["step"], r["collection"], r["name"]) for r in tensors]
    assert len(keys) == len(set(keys))
    assert sorted({r["step"] for r in tensors}) == list(range(0, steps, 2))
    debug = json.loads((run / "debugger" / "report.json").read_text())
    assert debug["train_steps"] == steps and debug["records_from_step"] == 0
    assert json.loads((run / "metrics.json").read_text())["data"]["images"]["test"] == 5 - 2


def test_the_resume_command_goes_on_in_the_run_folder(dev224, tmp_path):
    folder = make_abid_slice(dev224, tmp_path / "abid", ids_by_count(dev224, 6))
    run, logs = tmp_path / "run", tmp_path / "logs"
    options = RUN_OPTIONS + [f"data.root={folder}", f"paths.log_dir={logs}"]

    def python_train(*args):
        r = subprocess.run(
            [sys.executable, "train.py", *options, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr[-3000:]
        # each of Lightning's lines once: Hydra's root handlers print it, Lightning's own console handler not again
        assert (r.stdout + r.stderr).count("`Trainer.fit` stopped") == 1

    python_train("trainer.max_epochs=1", f"hydra.run.dir={run}", "test=false")
    python_train("trainer.max_epochs=2", f"ckpt_path={run}/checkpoints/last.ckpt")
    assert not (logs / "train" / "runs").exists()  # no new run folder: the run went on in its own
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [0, 1]
    assert json.loads((run / "metrics.json").read_text())["test/images"] == 5
    assert "ckpt_path" in (run / ".hydra" / "overrides.yaml").read_text()


def test_a_resume_with_more_epochs_refits_the_cosine_to_end_there(dev224, tmp_path):
    folder = make_abid_slice(dev224, tmp_path / "abid", ids_by_count(dev224, 6))
    run = tmp_path / "run"
    cosine = [
        "model.optimizer.lr=0.01",
        "model.scheduler={_target_:torch.optim.lr_scheduler.CosineAnnealingLR,_partial_:true,T_max:${trainer.max_epochs}}",
    ]
    _train(run, folder, *cosine, "trainer.max_epochs=2", "test=false")
    _train(run, folder, *cosine, "trainer.max_epochs=4", "test=false", f"ckpt_path={run}/checkpoints/last.ckpt")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    schedule = last["lr_schedulers"][0]
    # the cosine of the first 2 epochs restored as it was would have climbed back to 0.01 by step 4 (its period
    # is 2 x T_max), ending the run at the full rate; refitted, it ends at 0 after epoch 4
    assert schedule["T_max"] == 4 and schedule["last_epoch"] == 4
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_last_ckpt_is_the_last_epoch_even_when_it_is_not_the_best(dev224, tmp_path):
    """Best checkpoints are considered every 2 epochs here, so the third saves none: last.ckpt must still
    hold it (Lightning 2.6's own save_last copy would stay at epoch 2, and a resume would redo the third)."""
    folder = make_abid_slice(dev224, tmp_path / "abid", ids_by_count(dev224, 6))
    run = tmp_path / "run"
    _train(run, folder, "trainer.max_epochs=3", "test=false", "+callbacks.model_checkpoint.every_n_epochs=2")
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps_per_epoch = best["global_step"] // 2
    assert (best["epoch"], last["epoch"]) == (1, 2)
    assert last["global_step"] == 3 * steps_per_epoch
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_resume_never_takes_a_new_split(dev224, tmp_path):
    """Older checkpoints (no split inside) take their run folder's manifest, or data.manifest; a
    data.manifest that disagrees with the checkpoint's split, or a data module that re-split the data,
    is refused."""
    folder = make_abid_slice(dev224, tmp_path / "abid", ids_by_count(dev224, 6))
    run = tmp_path / "run"
    _train(run, folder, "trainer.max_epochs=1", "test=false")
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    stored = BinDataModule.split_in_checkpoint(ckpt)
    assert sorted(stored) == sorted(read_manifest(run / "split_manifest.csv"))

    cfg = compose_cfg("train", RUN_OPTIONS + [f"data.root={folder}"], tmp_path / "other")
    assert resume_split(cfg, last) == stored
    old = run / "checkpoints" / "old.ckpt"
    torch.save({k: v for k, v in ckpt.items() if k != BinDataModule.__qualname__}, old)
    assert sorted(resume_split(cfg, old)) == sorted(stored)  # from RUN/split_manifest.csv
    orphan = tmp_path / "elsewhere" / "checkpoints" / "old.ckpt"
    orphan.parent.mkdir(parents=True)
    shutil.copy(old, orphan)
    with pytest.raises(BincountError, match="stores no split.*data.manifest"):
        resume_split(cfg, orphan)

    reshuffled = tmp_path / "reshuffled.csv"
    rows = read_manifest(run / "split_manifest.csv")
    moved = next(i for i, _, s in rows if s == "val")
    reshuffled.write_text(
        "id,label,split\n" + "".join(f"{i},{label},{'train' if i == moved else s}\n" for i, label, s in rows)
    )
    bad = compose_cfg("train", RUN_OPTIONS + [f"data.root={folder}", f"data.manifest={reshuffled}"], tmp_path / "o2")
    with pytest.raises(BincountError, match=f"data.manifest: 1 bins are in another split.*{moved}: val -> train"):
        resume_split(bad, last)

    dm = BinDataModule(str(folder), image_size=32, seed=7)  # a data module that split afresh
    dm.setup("fit")
    with pytest.raises(BincountError, match="resume: .* bins are in another split"):
        dm.load_state_dict(ckpt[BinDataModule.__qualname__])
