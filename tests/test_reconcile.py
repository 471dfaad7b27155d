"""Reconcile predictions of real images with real ABID metadata: expected quantities and SKU names read
through the one metadata parser, a threshold chosen on validation predictions, one decision per bin,
and a summary whose accuracy figures follow from the decisions and the true counts."""

import csv
import json

import numpy as np
import pytest

from bincount.cli import main
from bincount.data.records import parse_metadata
from bincount.inventory import (
    AUDIT,
    CONFLICTING_EXPECTED,
    CONFLICTING_PREDICTIONS,
    DUPLICATE_EXPECTED,
    INVALID_COUNT,
    MATCH,
    MISMATCH,
    NOT_DECIDED,
    OUTSIDE,
    calibrate,
    choose_threshold,
    read_expected,
    reconcile,
    summarize,
)
from bincount.predict import read_predictions


@pytest.mark.parametrize(
    "target, threshold, precision, coverage",
    [
        (0.75, 0.6, 0.75, 1.0),  # all four kept: 3 of 4 right
        (0.9, 0.8, 1.0, 0.5),  # the 0.7 miss must go
        (0.5, 0.6, 0.75, 1.0),
    ],
)
def test_threshold_is_the_smallest_that_meets_the_target(target, threshold, precision, coverage):
    t = choose_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 1]), target)
    assert (t.threshold, t.precision, t.coverage) == (threshold, precision, coverage)


def test_ties_are_kept_or_dropped_together_and_an_unreachable_target_audits_everything():
    t = choose_threshold(np.array([0.9, 0.8, 0.8, 0.5]), np.array([1, 1, 0, 0]), 0.9)
    assert t.threshold == 0.9 and t.coverage == 0.25  # 0.8 would keep a right and a wrong one together
    none = choose_threshold(np.array([0.9, 0.8]), np.array([0, 0]), 0.5)
    assert none.threshold > 1 and none.coverage == 0


def test_a_lower_bound_does_not_trust_a_lucky_handful():
    pattern = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 1], bool)  # 90% right
    few = choose_threshold(np.linspace(1, 0.5, 10), pattern, 0.8)
    assert few.threshold == 0.5 and few.precision == 0.9  # the plain rule takes all ten
    assert choose_threshold(np.linspace(1, 0.5, 10), pattern, 0.8, z=1.645).threshold > 1  # too few to be sure
    many = choose_threshold(np.linspace(1, 0.5, 1000), np.tile(pattern, 100), 0.8, z=1.645)
    assert many.threshold == 0.5 and many.coverage == 1.0 and many.z == 1.645  # 900 of 1000 is enough


def test_expected_quantities_from_real_metadata_and_from_csv(dev224, tmp_path):
    files = sorted((dev224 / "metadata").glob("*.json"))[:50]
    expected, unusable = read_expected([str(f) for f in files])
    for f in files:
        count, skus = parse_metadata(json.loads(f.read_text()))
        assert expected[f.stem].count == count and expected[f.stem].skus == tuple(s.name for s in skus)
    assert unusable.errors == {} and unusable.notes == {} and any(e.skus for e in expected.values())
    table = tmp_path / "expected.csv"
    table.write_text("bin_id,expected_count,sku_names\nA1,3,Pens|Tape\nA2,x,\nA3,0,\n")
    got, bad = read_expected([str(table)])
    assert got["A1"].count == 3 and got["A1"].skus == ("Pens", "Tape") and got["A3"].count == 0
    assert bad.errors == {INVALID_COUNT: ["A2"]} and "A2" not in got


@pytest.fixture(scope="module")
def predictions(counter_ckpt, small_abid, tmp_path_factory):
    out = tmp_path_factory.mktemp("preds")
    main(["predict", str(counter_ckpt), str(small_abid), "--split", "test", "--out", str(out / "test.csv"), "--quiet"])
    main(["predict", str(counter_ckpt), str(small_abid), "--split", "val", "--out", str(out / "val.csv"), "--quiet"])
    return out / "test.csv", out / "val.csv"


def test_threshold_from_validation_meets_the_target_there(predictions):
    val = read_predictions(predictions[1])
    labelled = [p for p in val if p.true_count is not None]
    for target in (0.3, 0.5):
        t = calibrate(val, target)
        kept = [p for p in labelled if p.confidence >= t.threshold]
        if kept:
            assert np.mean([p.count == p.true_count for p in kept]) >= target
            assert t.coverage == pytest.approx(len(kept) / len(labelled), abs=1e-4)
            # the next lower cut would miss the target (or there is none)
            lower = sorted({p.confidence for p in labelled if p.confidence < t.threshold})
            if lower:
                more = [p for p in labelled if p.confidence >= lower[-1]]
                assert np.mean([p.count == p.true_count for p in more]) < target
        else:
            assert t.threshold > 1


def test_reconcile_flags_wrong_records_on_real_metadata(predictions, small_abid, tmp_path, capsys):
    """Inventory records taken from the real metadata, ten of them made wrong by one item: every bin
    gets a decision by the rule, and the summary's figures follow from the decisions."""
    test_preds = read_predictions(predictions[0])
    ids = sorted(p.id for p in test_preds)
    wrong = set(ids[::2][:10])
    table = tmp_path / "inventory.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bin_id", "expected_count", "sku_names"])
        for i in ids:
            count, skus = parse_metadata(json.loads((small_abid / "metadata" / f"{i}.json").read_text()))
            w.writerow([i, count + (1 if i in wrong else 0), "|".join(s.name for s in skus)])
    threshold = float(np.median([p.confidence for p in test_preds]))
    out, summary_path = tmp_path / "decisions.csv", tmp_path / "summary.json"
    assert (
        main(
            [
                "reconcile",
                str(predictions[0]),
                "--expected",
                str(table),
                "--threshold",
                str(threshold),
                "--out",
                str(out),
                "--summary",
                str(summary_path),
            ]
        )
        == 0
    )
    assert "bins to check" in capsys.readouterr().out
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ids) == 20
    by_id = {p.id: p for p in test_preds}
    for r in rows:
        p = by_id[r["bin_id"]]
        expected = int(r["expected_count"])
        if expected not in p.probabilities:  # a record of 6 against a 1-5 model: a person, never a correction
            assert (r["decision"], r["reason"]) == (AUDIT, OUTSIDE)
            continue
        want = AUDIT if p.confidence < threshold else MATCH if p.count == expected else MISMATCH
        assert r["decision"] == want
        assert r["sku_names"]  # carried along from the records
    s = json.loads(summary_path.read_text())
    assert s["bins"] == 20 and s[MATCH] + s[MISMATCH] + s[AUDIT] == 20
    assert s["auto_verified"] == s[MATCH] and s["to_check"] == s[MISMATCH] + s[AUDIT]
    lab = s["labelled"]
    assert lab["wrong_records"] == 10
    matches = [r for r in rows if r["decision"] == MATCH]
    if matches:
        assert lab["match_accuracy"] == pytest.approx(
            np.mean([r["true_count"] == r["expected_count"] for r in matches]), abs=1e-4
        )
    sent = sum(r["decision"] != MATCH for r in rows if r["true_count"] != r["expected_count"])
    assert lab["wrong_records_sent_to_a_person"] == sent


def test_reconcile_with_metadata_folder_and_calibration(predictions, small_abid, tmp_path):
    """The real case: expected quantities straight from the ABID metadata, threshold from validation."""
    test_preds = read_predictions(predictions[0])
    expected, _ = read_expected([str(small_abid)])
    t = calibrate(read_predictions(predictions[1]), 0.3)
    decisions, unmatched = reconcile(test_preds, expected, t.threshold)
    assert len(decisions) == 20 and unmatched["no expected quantity"] == []
    assert len(unmatched["no photo"]) == 180  # the other bins of the folder were not photographed today
    s = summarize(decisions, t, unmatched)
    confident = [d for d in decisions if d.decision != AUDIT]
    if confident:  # records are the truth here: a confident decision is right exactly when the count is
        assert s["labelled"]["confident_decision_accuracy"] == s["labelled"]["count_accuracy_confident"]
    assert s["labelled"]["wrong_records"] == 0
    assert (
        main(
            [
                "reconcile",
                str(predictions[0]),
                "--expected",
                str(small_abid),
                "--calibration",
                str(predictions[1]),
                "--target-precision",
                "0.3",
                "--out",
                str(tmp_path / "d.csv"),
            ]
        )
        == 0
    )


def test_reconcile_without_a_threshold_is_one_clear_error(predictions, small_abid, capsys):
    assert main(["reconcile", str(predictions[0]), "--expected", str(small_abid)]) == 2
    assert "--threshold" in capsys.readouterr().err


# -- inputs a spreadsheet or a pipeline really produces -------------------------------------------
def _decisions(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _inventory(small_abid, ids, path, encoding="utf-8", extra_rows=(), skip=()):
    """An expected-quantities CSV from the real metadata of ``ids`` (plus raw extra rows)."""
    lines = ["bin_id,expected_count,sku_names"]
    for i in ids:
        if i in skip:
            continue
        count, skus = parse_metadata(json.loads((small_abid / "metadata" / f"{i}.json").read_text()))
        lines.append(f"{i},{count},{'|'.join(s.name.replace(',', ' ') for s in skus)}")
    path.write_text("\r\n".join(lines + list(extra_rows)) + "\r\n", encoding=encoding)
    return path


def test_a_spreadsheet_csv_with_a_byte_order_mark_and_its_own_header_spelling(predictions, small_abid, tmp_path):
    ids = sorted(p.id for p in read_predictions(predictions[0]))
    table = _inventory(small_abid, ids, tmp_path / "excel.csv", encoding="utf-8-sig")
    table.write_text(
        table.read_text(encoding="utf-8-sig").replace("bin_id,expected_count", "Bin_ID ,Expected_Count"),
        encoding="utf-8-sig",
    )
    assert table.read_bytes()[:3] == b"\xef\xbb\xbf"
    out = tmp_path / "d.csv"
    assert (
        main(["reconcile", str(predictions[0]), "--expected", str(table), "--threshold", "0.5", "--out", str(out)]) == 0
    )
    assert sorted(r["bin_id"] for r in _decisions(out)) == ids


def test_bad_expected_rows_are_named_undecided_and_make_the_result_incomplete(
    predictions, small_abid, tmp_path, capsys
):
    ids = sorted(p.id for p in read_predictions(predictions[0]))
    conflicting, repeated, fractional, negative, blank, spelled = ids[:6]
    table = _inventory(
        small_abid,
        ids,
        tmp_path / "inv.csv",
        skip={fractional, negative, blank, spelled, ids[6]},
        extra_rows=[
            f"{conflicting},9,",
            f"{repeated},{_count(small_abid, repeated)},",
            f"{fractional},2.5,",
            f"{negative},-1,",
            f"{blank},,",
            f"{spelled},three,",
            f"{ids[6]} ,{_count(small_abid, ids[6])}.0,",
            "NOPHOTO,x,",
        ],
    )
    out, summary = tmp_path / "d.csv", tmp_path / "s.json"
    assert (
        main(
            [
                "reconcile",
                str(predictions[0]),
                "--expected",
                str(table),
                "--threshold",
                "0.5",
                "--out",
                str(out),
                "--summary",
                str(summary),
            ]
        )
        == 1
    )
    rows = {r["bin_id"]: r for r in _decisions(out)}
    assert sorted(rows) == ids  # every photographed bin once, decided or not
    undecided = {i for i, r in rows.items() if r["decision"] == NOT_DECIDED}
    assert undecided == {conflicting, fractional, negative, blank, spelled}
    assert rows[conflicting]["problem"] == CONFLICTING_EXPECTED and rows[blank]["problem"] == INVALID_COUNT
    assert rows[repeated]["decision"] != NOT_DECIDED and rows[ids[6]]["decision"] != NOT_DECIDED  # "3.0", " id"
    s = json.loads(summary.read_text())
    assert s["complete"] is False and s[NOT_DECIDED] == 5 and s["bins"] == 20
    assert s["input_problems"]["errors"] == {
        INVALID_COUNT: sorted([fractional, negative, blank, spelled, "NOPHOTO"]),
        CONFLICTING_EXPECTED: [conflicting],
    }
    assert s["input_problems"]["notes"] == {DUPLICATE_EXPECTED: [repeated]}
    err = capsys.readouterr().err
    assert f"error: {CONFLICTING_EXPECTED}: 1 bin(s): {conflicting}" in err and "error: incomplete" in err


def _count(small_abid, bin_id):
    return parse_metadata(json.loads((small_abid / "metadata" / f"{bin_id}.json").read_text()))[0]


def test_duplicate_predictions_are_decided_once_and_conflicting_ones_not_at_all(predictions, small_abid, tmp_path):
    text = predictions[0].read_text()
    header, *lines = text.strip().splitlines()
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("\n".join([header, *lines, *lines]) + "\n")  # every photo listed twice: 40 rows, 20 bins
    out = tmp_path / "d.csv"
    assert (
        main(["reconcile", str(doubled), "--expected", str(small_abid), "--threshold", "0.5", "--out", str(out)]) == 0
    )
    assert len(_decisions(out)) == 20 and len({r["bin_id"] for r in _decisions(out)}) == 20
    # a second photo of one bin counted differently: that bin is not decided
    first = read_predictions(predictions[0])[0]
    other = (first.count % 5) + 1
    row = lines[0].split(",")
    row[2] = str(other)  # predicted_count
    clash = tmp_path / "clash.csv"
    clash.write_text("\n".join([header, *lines, ",".join(row)]) + "\n")
    assert main(["reconcile", str(clash), "--expected", str(small_abid), "--threshold", "0.5", "--out", str(out)]) == 1
    rows = {r["bin_id"]: r for r in _decisions(out)}
    assert len(rows) == 20 and rows[first.id]["decision"] == NOT_DECIDED
    assert rows[first.id]["problem"] == CONFLICTING_PREDICTIONS


def test_empty_predictions_are_an_error_not_an_empty_success(small_abid, tmp_path, capsys):
    for name, text in (
        ("empty.csv", ""),
        ("header.csv", "id,image,predicted_count,confidence\n"),
        ("empty.json", "[]"),
    ):
        (tmp_path / name).write_text(text)
        assert (
            main(
                [
                    "reconcile",
                    str(tmp_path / name),
                    "--expected",
                    str(small_abid),
                    "--threshold",
                    "0.5",
                    "--out",
                    str(tmp_path / "d.csv"),
                ]
            )
            == 2
        )
        assert "holds no predictions" in capsys.readouterr().err


def test_metadata_with_a_byte_order_mark_is_read_everywhere(predictions, small_abid, tmp_path):
    """Metadata saved by an editor that writes a UTF-8 byte-order mark: the reader, reconcile and
    predict's true counts read it like any other."""
    from bincount.data.records import read_abid
    from conftest import make_abid_slice

    ids = sorted(p.stem for p in (small_abid / "metadata").glob("*.json"))[:10]
    folder = make_abid_slice(small_abid, tmp_path / "bom", ids)
    for f in (folder / "metadata").glob("*.json"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    records, report = read_abid(folder, check_images=False)
    assert report.total == 0 and sorted(r.id for r in records) == ids
    assert all(r.count == _count(small_abid, r.id) for r in records)
    expected, problems = read_expected([str(folder)])
    assert sorted(expected) == ids and not problems.errors
