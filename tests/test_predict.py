"""`bincount predict` on real images: files, ABID folders (with their true counts), a split of the
training run, s3:// URIs on the loopback AWS server; CSV and JSON out; broken images skipped and named."""

import csv
import json
import shutil

import boto3
import numpy as np
import pytest

from bincount.cli import main
from bincount.data.split import read_manifest
from bincount.predict import read_predictions
from bincount.serve.predictor import load_predictor


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_an_abid_folder_and_a_file_to_csv(counter_ckpt, small_abid, dev224, tmp_path, capsys):
    extra = sorted((dev224 / "bin-images").glob("*.jpg"))[-1]  # not in small_abid: no true count
    out = tmp_path / "preds.csv"
    assert main(["predict", str(counter_ckpt), str(small_abid), str(extra), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 201
    printed = capsys.readouterr()
    assert len(printed.out.strip().splitlines()) == 201
    summary = json.loads(printed.err.strip().splitlines()[-1])
    assert summary["images"] == 201 and summary["labelled"] == 200 and summary["skipped"] == 0

    truth = {m.stem: json.loads(m.read_text())["EXPECTED_QUANTITY"] for m in (small_abid / "metadata").glob("*.json")}
    predictor = load_predictor(counter_ckpt)
    sample = rows[:16]
    probs = predictor.predict([predictor.load(r["image"]) for r in sample])
    for row, p in zip(sample, probs):
        ps = np.array([float(row[f"p_{c}"]) for c in (1, 2, 3, 4, 5)])
        np.testing.assert_allclose(ps, p, atol=1e-5)
        assert int(row["predicted_count"]) == [1, 2, 3, 4, 5][int(ps.argmax())]
        assert float(row["confidence"]) == pytest.approx(ps.max(), abs=1e-6)
        assert int(row["true_count"]) == truth[row["id"]]
    assert next(r for r in rows if r["id"] == extra.stem)["true_count"] == ""
    assert summary["accuracy"] == pytest.approx(
        np.mean([int(r["predicted_count"]) == int(r["true_count"]) for r in rows if r["true_count"]]), abs=1e-4
    )


def test_json_output_and_the_onnx_backend_agree_with_csv_and_torch(counter_ckpt, small_abid, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    main(["predict", str(counter_ckpt), str(small_abid), "--out", str(tmp_path / "t.csv"), "--quiet"])
    main(
        [
            "predict",
            str(counter_ckpt),
            str(small_abid),
            "--out",
            str(tmp_path / "o.json"),
            "--quiet",
            "--backend",
            "onnx",
            "--batch-size",
            "7",
        ]
    )
    torch_rows, onnx_rows = read_predictions(tmp_path / "t.csv"), read_predictions(tmp_path / "o.json")
    assert [r.id for r in torch_rows] == [r.id for r in onnx_rows]
    assert [r.count for r in torch_rows] == [r.count for r in onnx_rows]
    assert np.allclose([r.confidence for r in torch_rows], [r.confidence for r in onnx_rows], atol=1e-5)


def test_split_val_predicts_exactly_the_validation_images(counter_ckpt, small_abid, tmp_path):
    out = tmp_path / "val.csv"
    main(["predict", str(counter_ckpt), str(small_abid), "--split", "val", "--out", str(out), "--quiet"])
    val = {i for i, _, s in read_manifest(counter_ckpt.parent.parent / "split_manifest.csv") if s == "val"}
    assert {r["id"] for r in read_csv(out)} == val and len(val) == 20


def test_broken_images_are_skipped_and_named(counter_ckpt, dev224, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = (dev224 / "bin-images" / "00004.jpg").read_bytes()
    (folder / "good.jpg").write_bytes(good)
    (folder / "half.jpg").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("not an image")
    out = tmp_path / "p.csv"
    assert main(["predict", str(counter_ckpt), str(folder), "--out", str(out)]) == 1  # the rest is written
    assert [r["id"] for r in read_csv(out)] == ["good"]
    err = capsys.readouterr().err
    assert "half.jpg: unreadable image" in err and "text.jpg: unreadable image" in err


def test_predict_s3_uris(counter_ckpt, small_abid, tmp_path, aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="robot-photos")
    images = sorted((small_abid / "bin-images").glob("*.jpg"))[:6]
    for p in images:
        s3.put_object(Bucket="robot-photos", Key=f"today/{p.name}", Body=p.read_bytes())
    s3.put_object(Bucket="robot-photos", Key="today/notes.txt", Body=b"not a photo")
    s3.put_object(Bucket="robot-photos", Key="today/broken.jpg", Body=images[0].read_bytes()[:500])
    main(["predict", str(counter_ckpt), "s3://robot-photos/today/", "--out", str(tmp_path / "s3.csv"), "--quiet"])
    local = tmp_path / "local"
    local.mkdir()
    for p in images:
        shutil.copy(p, local / p.name)
    main(["predict", str(counter_ckpt), str(local), "--out", str(tmp_path / "local.csv"), "--quiet"])
    got, want = read_predictions(tmp_path / "s3.csv"), read_predictions(tmp_path / "local.csv")
    assert [(r.id, r.count) for r in got] == [(r.id, r.count) for r in want] and len(got) == 6


def test_missing_inputs_are_one_clear_error(counter_ckpt, dev224, tmp_path, capsys):
    assert main(["predict", str(counter_ckpt), str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.ckpt"), str(dev224 / "bin-images" / "00004.jpg")]) == 2
    assert "no such model" in capsys.readouterr().err


def test_a_folder_where_nothing_is_readable_exits_non_zero(counter_ckpt, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_text("not an image")
    (folder / "b.png").write_bytes(b"")
    out = tmp_path / "p.csv"
    assert main(["predict", str(counter_ckpt), str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: no image could be read" in err and "a.jpg: unreadable image" in err
    assert read_csv(out) == []


def test_links_loops_and_other_files_are_all_accounted_for(counter_ckpt, dev224, tmp_path, capsys):
    """Every entry of a folder is predicted, skipped with a reason, or listed as ignored; a linked folder
    is searched once, so no photo is predicted twice."""
    import os

    folder, shelf = tmp_path / "photos", tmp_path / "shelf"
    folder.mkdir()
    shelf.mkdir()
    good = (dev224 / "bin-images" / "00004.jpg").read_bytes()
    (folder / "a.jpg").write_bytes(good)
    (shelf / "b.jpg").write_bytes(good)
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")  # a link to itself
    os.symlink(tmp_path / "gone.jpg", folder / "dangling.jpg")
    os.symlink(shelf, folder / "shelf")  # a linked folder: searched
    os.symlink(folder, shelf / "back")  # ... which links back up: a loop
    os.symlink(shelf, folder / "again")  # the same folder by a second path: searched once
    (folder / "notes.txt").write_text("to do")
    (folder / ".hidden.jpg").write_bytes(good)
    out = tmp_path / "p.csv"
    assert main(["predict", str(counter_ckpt), str(folder), "--out", str(out), "--quiet"]) == 1
    assert sorted(r["id"] for r in read_csv(out)) == ["a", "b"]
    err = capsys.readouterr().err
    skipped = dict(
        line.removeprefix("skipped ").split(": ", 1) for line in err.splitlines() if line.startswith("skipped ")
    )
    assert "Too many levels of symbolic links" in skipped[str(folder / "loop.jpg")]
    assert "No such file" in skipped[str(folder / "dangling.jpg")]
    searched_twice = {p for p, why in skipped.items() if "already searched" in why}
    # "again" is searched first (sorted); "shelf" is the same folder, and its "back" leads up to the start
    assert searched_twice == {str(folder / "shelf"), str(folder / "again" / "back")}
    assert "ignored 2 file(s)" in err and "notes.txt" in err and ".hidden.jpg" in err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["images"] == 2 and summary["skipped"] == 4 and summary["ignored"] == 2
