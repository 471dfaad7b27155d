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
from bincount.errors import BincountError
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


# -- a model with the overflow class ("more than 5") ----------------------------------------------
@pytest.fixture(scope="module")
def mixed_abid(abid, tmp_path_factory):
    """Real bins of 0-5 items (dev-224) and of 6-20 items (over5-224), with their metadata, in two folders."""
    from conftest import ids_by_count, make_abid_slice

    root = tmp_path_factory.mktemp("mixed")
    small = make_abid_slice(abid / "dev-224", root / "dev", ids_by_count(abid / "dev-224", 2, (0, 1, 2, 3, 4, 5)))
    many = make_abid_slice(abid / "over5-224", root / "over5", ids_by_count(abid / "over5-224", 2, (6, 7, 9, 12, 20)))
    return small, many


@pytest.fixture(scope="module")
def overflow_ckpt(mixed_abid, tmp_path_factory):
    from helpers.counters import mixed_counter

    images = [p for folder in mixed_abid for p in sorted((folder / "bin-images").glob("*.jpg"))]
    return mixed_counter(tmp_path_factory.mktemp("overflow") / "best.ckpt", images)


def test_an_overflow_model_writes_at_least_in_csv_and_json(overflow_ckpt, mixed_abid, tmp_path, capsys):
    folders = [str(f) for f in mixed_abid]
    csv_out, json_out = tmp_path / "p.csv", tmp_path / "p.json"
    assert main(["predict", str(overflow_ckpt), *folders, "--out", str(csv_out)]) == 0
    printed = capsys.readouterr()
    assert main(["predict", str(overflow_ckpt), *folders, "--out", str(json_out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    rows = read_csv(csv_out)
    names = ["0", "1", "2", "3", "4", "5", "6+"]
    assert list(rows[0]) == ["id", "image", "predicted_count", "at_least", "confidence"] + [f"p_{n}" for n in names] + [
        "true_count"
    ]
    truth = {
        m.stem: json.loads(m.read_text())["EXPECTED_QUANTITY"]
        for f in mixed_abid
        for m in (f / "metadata").glob("*.json")
    }
    assert len(rows) == len(truth) == 22 and sorted(truth.values())[-1] == 20
    predictor = load_predictor(overflow_ckpt)
    probs = predictor.predict([predictor.load(r["image"]) for r in rows])
    more = 0
    for row, p in zip(rows, probs):
        np.testing.assert_allclose([float(row[f"p_{n}"]) for n in names], p, atol=1e-5)
        if p.argmax() == 6:  # "more than 5": no count, at_least 6
            more += 1
            assert (row["predicted_count"], row["at_least"]) == ("", "6")
        else:
            assert (row["predicted_count"], row["at_least"]) == (str(p.argmax()), "")
        assert int(row["true_count"]) == truth[row["id"]]
    assert 0 < more < len(rows)  # both kinds of answer are exercised
    printed_answers = dict(line.split("\t")[:2] for line in printed.out.strip().splitlines())
    assert {r["id"]: r["predicted_count"] or "6+" for r in rows} == printed_answers

    doc = json.loads(json_out.read_text())
    assert [d["id"] for d in doc] == [r["id"] for r in rows]
    for d, row in zip(doc, rows):
        assert d["predicted_count"] == (int(row["predicted_count"]) if row["predicted_count"] else None)
        assert d["at_least"] == (6 if row["at_least"] else None) and isinstance(d["true_count"], int)
    for path in (csv_out, json_out):  # both read back to the same answers
        back = read_predictions(path)
        assert [(b.name, b.count, b.at_least, b.true_count) for b in back] == [
            (
                "6+" if r["at_least"] else r["predicted_count"],
                optional(r["predicted_count"]),
                optional(r["at_least"]),
                int(r["true_count"]),
            )
            for r in rows
        ]
    # right means the right class: 12 items answered "6+" is right, 0 items is a count like any other
    right = [
        (int(r["true_count"]) > 5) if r["at_least"] else int(r["predicted_count"]) == int(r["true_count"]) for r in rows
    ]
    assert summary["accuracy"] == pytest.approx(np.mean(right), abs=1e-4)
    assert summary["per_count"]["6+"] == more and summary["outside_model_counts"] == 0


def optional(text):
    return int(text) if text else None


def test_a_1_to_5_model_counts_bins_outside_its_classes_as_wrong(counter_ckpt, mixed_abid, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(counter_ckpt), str(mixed_abid[1]), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    rows = read_csv(out)
    assert summary["accuracy"] == 0 and summary["outside_model_counts"] == summary["labelled"] == len(rows) == 10
    assert all(r["at_least"] == "" and 1 <= int(r["predicted_count"]) <= 5 for r in rows)


def test_prediction_files_older_than_the_overflow_class_still_read(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text(
        "id,image,predicted_count,confidence,p_1,p_2,p_3,p_4,p_5,true_count\n"
        "a,a.jpg,3,0.7,0.1,0.1,0.7,0.05,0.05,3\n"
        "b,b.jpg,1,0.6,0.6,0.1,0.1,0.1,0.1,\n"
    )
    a, b = read_predictions(old)
    assert (a.count, a.at_least, a.name, a.index, a.right, a.classes.overflow) == (3, None, "3", 2, True, False)
    assert b.true_count is None and b.right is None
    zero = tmp_path / "zero.json"  # a true count of 0 in JSON is a count, not a blank
    zero.write_text(
        json.dumps(
            [
                {
                    "id": "e",
                    "image": "e.jpg",
                    "predicted_count": 0,
                    "confidence": 0.9,
                    "p_0": 0.9,
                    "p_1": 0.1,
                    "true_count": 0,
                }
            ]
        )
    )
    (e,) = read_predictions(zero)
    assert (e.count, e.true_count, e.right) == (0, 0, True)


@pytest.mark.parametrize(
    "row, problem",
    [
        ("a,a.jpg,7,,0.7,0.1,0.1,0.7,0.05,0.05,", "predicted_count 7 / at_least None is not an answer"),
        ("a,a.jpg,,6,0.7,0.1,0.1,0.7,0.05,0.05,", "at_least 6 is not an answer"),  # no overflow class
        ("a,a.jpg,3,6,0.7,0.1,0.1,0.7,0.05,0.05,", "predicted_count 3 / at_least 6"),
    ],
)
def test_a_prediction_that_its_classes_cannot_make_is_a_clear_error(tmp_path, capsys, row, problem):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,image,predicted_count,at_least,confidence,p_1,p_2,p_3,p_4,p_5,true_count\n" + row + "\n")
    with pytest.raises(BincountError, match=problem):
        read_predictions(bad)
    odd = tmp_path / "odd.csv"  # an overflow class that does not follow the exact counts
    odd.write_text(
        "id,image,predicted_count,at_least,confidence,p_1,p_2,p_9+,true_count\na,a.jpg,,9,0.7,0.1,0.2,0.7,\n"
    )
    assert main(["reconcile", str(odd), "--expected", str(odd), "--threshold", "0.5"]) == 2
    assert "p_6+" in capsys.readouterr().err
