"""Reconcile predictions of real images with real ABID metadata: expected quantities and SKU names read
through the one metadata parser, a threshold chosen on validation predictions, one decision per bin,
and a summary whose accuracy figures follow from the decisions and the true counts."""

import csv
import json

import numpy as np
import pytest

from bincount.cli import main
from bincount.counts import CountClasses
from bincount.data.records import parse_metadata
from bincount.errors import BincountError
from bincount.inventory import (
    AUDIT,
    CONFLICTING_EXPECTED,
    CONFLICTING_PREDICTIONS,
    DISAGREES,
    DUPLICATE_EXPECTED,
    INVALID_COUNT,
    MATCH,
    MISMATCH,
    NOT_DECIDED,
    NOT_SURE,
    OUTSIDE,
    PREDICTED_EMPTY,
    PREDICTED_MORE,
    TOO_MANY,
    TOO_MANY_ACCEPTED,
    Expected,
    RecordModel,
    calibrate,
    choose_record_threshold,
    choose_threshold,
    decide,
    read_expected,
    reconcile,
    record_probability,
    summarize,
)
from bincount.predict import Prediction, read_predictions


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
        if not p.classes.covers(expected):  # a record of 6 against a 1-5 model: a person, never a correction
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


# -- what the model cannot count: bins of more than five, empty bins, records outside its classes -------
@pytest.fixture(scope="module")
def over5(abid, tmp_path_factory):
    """Real bins of 6 to 20 items (over5-224), twelve of them with 12 items, and their real metadata."""
    from conftest import ids_by_count, make_abid_slice

    ids = ids_by_count(abid / "over5-224", 12, (12,)) + ids_by_count(abid / "over5-224", 2, (6, 9, 20))
    return make_abid_slice(abid / "over5-224", tmp_path_factory.mktemp("over5"), ids)


def _predict(model, folder, out):
    assert main(["predict", str(model), str(folder), "--out", str(out), "--quiet"]) == 0
    return out


def _run(predictions, expected, out, *flags):
    summary = out.with_suffix(".json")
    rc = main(
        [
            "reconcile",
            str(predictions),
            "--expected",
            str(expected),
            "--out",
            str(out),
            "--summary",
            str(summary),
            *flags,
        ]
    )
    return rc, _decisions(out), json.loads(summary.read_text())


NAMES_6 = [0, 1, 2, 3, 4, 5]


def test_a_bin_of_12_never_gets_a_correction_of_5(counter_ckpt, over5, tmp_path):
    """Real photos of bins of 12 (and 6-20) items against their real records. A 1-5 model confidently
    answering 5, or the trained tiny 1-5 counter, sends every bin to a person; an overflow model answering
    "more than 5" agrees with the records, but only a person or --accept-overflow verifies them."""
    from helpers.counters import constant_counter

    fives = constant_counter(tmp_path / "fives.ckpt", [1, 2, 3, 4, 5], False, [0.01, 0.01, 0.01, 0.01, 0.96])
    overflow = constant_counter(tmp_path / "more.ckpt", NAMES_6, True, [0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.93])
    records = {m.stem: json.loads(m.read_text())["EXPECTED_QUANTITY"] for m in (over5 / "metadata").glob("*.json")}
    assert sum(c == 12 for c in records.values()) == 12 and min(records.values()) == 6
    for model in (fives, counter_ckpt):
        preds = _predict(model, over5, tmp_path / f"{model.stem}.csv")
        for rule in ([], ["--record-error-rate", "0.1"]):
            rc, rows, s = _run(preds, over5, tmp_path / "d.csv", "--threshold", "0.5", *rule)
            assert rc == 0 and len(rows) == len(records) == 18
            for r in rows:
                assert (r["decision"], r["reason"]) == (AUDIT, OUTSIDE), r
                assert r["predicted_count"] == r["predicted_at_least"] == "" and r["record_probability"] == ""
            assert s["reasons"] == {OUTSIDE: 18} and s["auto_verified"] == 0 and s[MISMATCH] == 0
    preds = _predict(overflow, over5, tmp_path / "more.csv")
    assert {p.name for p in read_predictions(preds)} == {"6+"}
    for rule in ([], ["--record-error-rate", "0.1"]):
        rc, rows, s = _run(preds, over5, tmp_path / "d.csv", "--threshold", "0.5", *rule)
        assert {(r["decision"], r["reason"], r["predicted_count"], r["predicted_at_least"]) for r in rows} == {
            (AUDIT, TOO_MANY, "", "6")
        }
        assert s["reasons"] == {TOO_MANY: 18} and s["labelled"]["count_accuracy_all"] == 1.0
        rc, rows, s = _run(preds, over5, tmp_path / "d.csv", "--threshold", "0.5", "--accept-overflow", *rule)
        assert {(r["decision"], r["reason"], r["predicted_at_least"]) for r in rows} == {
            (MATCH, TOO_MANY_ACCEPTED, "6")
        }
        assert s["auto_verified"] == 18 and s["accept_overflow"] is True
    # the same photos against records of 3 and 5: a mismatch whose correction is "at least 6", never a count
    table = tmp_path / "low.csv"
    ids = sorted(records)
    table.write_text("bin_id,expected_count\n" + "".join(f"{i},{3 if n % 2 else 5}\n" for n, i in enumerate(ids)))
    rc, rows, s = _run(preds, table, tmp_path / "d.csv", "--threshold", "0.5")
    assert {(r["decision"], r["reason"], r["predicted_count"], r["predicted_at_least"]) for r in rows} == {
        (MISMATCH, DISAGREES, "", "6")
    }
    assert s["labelled"]["mismatch_accuracy"] == 1.0  # every record of 3 or 5 was wrong: 6 to 20 items


def test_a_real_overflow_model_on_bins_of_12_proposes_no_exact_count_for_them(over5, tmp_path):
    """An untrained overflow network answering "more than 5" for about half the real photos: whichever
    answer it gives, a bin it calls "6+" gets no exact count, and one it counts exactly is judged as usual."""
    from helpers.counters import mixed_counter

    model = mixed_counter(tmp_path / "mixed.ckpt", sorted((over5 / "bin-images").glob("*.jpg")))
    preds = read_predictions(_predict(model, over5, tmp_path / "p.csv"))
    assert 0 < sum(p.at_least == 6 for p in preds) < len(preds)
    rc, rows, _ = _run(tmp_path / "p.csv", over5, tmp_path / "d.csv", "--threshold", "0")
    by_id = {p.id: p for p in preds}
    for r in rows:
        p = by_id[r["bin_id"]]
        if p.at_least:
            assert (r["decision"], r["reason"], r["predicted_count"], r["predicted_at_least"]) == (
                AUDIT,
                TOO_MANY,
                "",
                "6",
            )
        else:  # an exact count of a bin of 6-20 items is a confident mistake: flagged, never verified
            assert (r["decision"], r["predicted_count"]) == (MISMATCH, str(p.count)) and p.count <= 5


def test_a_photo_predicted_empty_against_a_record_of_3_is_flagged_first(dev224, tmp_path, capsys):
    """Real photos and records of dev-224; the photo of a real empty bin is answered "empty" (constructed
    probabilities in the predictions file), and its record says 3: a lost or misplaced item."""
    from conftest import ids_by_count, make_abid_slice
    from helpers.counters import mixed_counter

    empty = ids_by_count(dev224, 1, (0,))[0]
    folder = make_abid_slice(dev224, tmp_path / "bins", ids_by_count(dev224, 3, (0, 1, 2, 3, 4, 5)))
    model = mixed_counter(tmp_path / "mixed.ckpt", sorted((folder / "bin-images").glob("*.jpg")))
    preds = _predict(model, folder, tmp_path / "p.csv")
    rows = read_csv_rows(preds)
    assert all(r["predicted_count"] != "0" for r in rows)  # the network itself never answers empty
    for r in rows:
        if r["id"] == empty:
            probs = {"p_0": 0.95, "p_1": 0.01, "p_2": 0.01, "p_3": 0.01, "p_4": 0.01, "p_5": 0.005, "p_6+": 0.005}
            r.update(probs, predicted_count="0", at_least="", confidence="0.95")
    write_csv_rows(preds, rows)
    records = {m.stem: json.loads(m.read_text())["EXPECTED_QUANTITY"] for m in (folder / "metadata").glob("*.json")}
    assert records[empty] == 0
    table = tmp_path / "records.csv"
    table.write_text("bin_id,expected_count\n" + "".join(f"{i},{3 if i == empty else c}\n" for i, c in records.items()))
    for rule in (["--threshold", "0.5"], ["--threshold", "0.9", "--record-error-rate", "0.1"]):
        capsys.readouterr()
        rc, decisions, s = _run(preds, table, tmp_path / "d.csv", *rule)
        first = decisions[0]
        assert first["bin_id"] == empty and first["reason"] == PREDICTED_EMPTY, rule
        assert first["expected_count"] == "3" and first["predicted_count"] == "0" and first["decision"] != MATCH
        assert [d["bin_id"] for d in decisions[1:]] == sorted(d["bin_id"] for d in decisions[1:])
        assert s["reasons"][PREDICTED_EMPTY] == 1
        listed = capsys.readouterr().out.splitlines()
        assert listed[1].split()[0] == empty  # the first bin of the printed audit list
    assert first["decision"] == AUDIT  # the record rule cannot explain a record of 3 on an empty bin: a person


def test_a_record_of_0_against_a_1_to_5_model_goes_to_a_person(counter_ckpt, dev224, tmp_path):
    from conftest import ids_by_count, make_abid_slice

    folder = make_abid_slice(dev224, tmp_path / "empty", ids_by_count(dev224, 6, (0,)))
    preds = _predict(counter_ckpt, folder, tmp_path / "p.csv")
    for rule in ([], ["--record-error-rate", "0.1"]):
        rc, rows, s = _run(preds, folder, tmp_path / "d.csv", "--threshold", "0", *rule)
        assert rc == 0 and len(rows) == 6
        assert {(r["decision"], r["reason"], r["expected_count"], r["predicted_count"]) for r in rows} == {
            (AUDIT, OUTSIDE, "0", "")
        }
        assert s["reasons"] == {OUTSIDE: 6} and s["to_check"] == 6


def read_csv_rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv_rows(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# -- the rules on constructed probabilities -------------------------------------------------------------
def _p(probs, true=None, bin_id="b"):
    return Prediction.from_probabilities(bin_id, f"{bin_id}.jpg", CountClasses(NAMES_6, True), probs, true)


MORE = [0.01, 0.01, 0.01, 0.01, 0.01, 0.05, 0.90]


def test_overflow_decisions_by_rule():
    rm = RecordModel(0.1)
    for model, threshold in ((None, 0.5), (rm, 0.5)):
        assert decide(_p(MORE), Expected(12), threshold, model).reason == TOO_MANY
        accepted = decide(_p(MORE), Expected(12), threshold, model, accept_overflow=True)
        assert (accepted.decision, accepted.predicted, accepted.predicted_count) == (MATCH, "6+", None)
        low = decide(_p(MORE), Expected(2), threshold, model)
        assert (low.predicted_at_least, low.predicted_count) == (6, None) and low.decision != MATCH
        # the photo alone: a mismatch; the record rule would explain a record of 2 away (it assumes a wrong
        # record is off by at most two): not over a photo saying "more than 5"
        assert (low.decision, low.reason) == ((MISMATCH, DISAGREES) if model is None else (AUDIT, PREDICTED_MORE))
    # a record of 12 cannot be a miscount of 5 (off by at most 2): the record rule keeps "6+"
    fives = _p([0.01, 0.01, 0.01, 0.01, 0.01, 0.90, 0.05])
    assert decide(fives, Expected(12), 0.5).predicted_count == 5  # the photo alone disagrees
    d = decide(fives, Expected(12), 0.5, rm)
    assert (d.decision, d.reason, d.predicted_at_least, d.record_probability) == (AUDIT, TOO_MANY, 6, 1.0)
    # a record of 6 could be a miscount of 5: a photo sure of 5 is proposed, one less sure goes to a person
    d = decide(fives, Expected(6), 0.95, rm)
    assert (d.decision, d.reason, d.predicted_at_least) == (AUDIT, NOT_SURE, 6)
    d = decide(_p([0.005, 0.005, 0.005, 0.005, 0.005, 0.97, 0.005]), Expected(6), 0.95, rm)
    assert (d.decision, d.predicted_count) == (MISMATCH, 5) and d.record_probability < 0.5
    assert record_probability(rm, fives, 12) == 1.0
    # a record of 0 "explains" a photo 90% sure of "6+" (P(record right) 0.94: the photo must be wrong, as a
    # record is never off by more than two in that model); the photo's "more than 5" is not overruled
    assert record_probability(rm, _p(MORE), 0) > 0.9
    d = decide(_p(MORE), Expected(0), 0.9, rm)
    assert (d.decision, d.reason, d.predicted_at_least) == (AUDIT, PREDICTED_MORE, 6)


def test_the_record_threshold_leaves_out_records_it_could_never_verify():
    rng = np.random.default_rng(0)
    preds = []
    for i in range(300):
        true = int(rng.choice([1, 2, 3, 12]))
        centre = min(true, 6)
        probs = np.full(7, 0.02)
        probs[centre] = 0.88
        preds.append(_p(probs, true, str(i)))
    rm = RecordModel(0.1)
    exact = choose_record_threshold(rm, preds, 0.9)
    assert exact.calibration_images == 300 and exact.threshold <= 1 and exact.precision >= 0.9
    twelves = [p for p in preds if p.true_count == 12]
    with pytest.raises(BincountError, match="accept-overflow"):  # no record of 6 or more is ever verified
        choose_record_threshold(rm, twelves, 0.9)
    # accepted, a record of 10-14 on a bin of 12 verifies "more than 5", which the bin does hold
    accepting = choose_record_threshold(rm, twelves, 0.9, accept_overflow=True)
    assert accepting.precision == 1.0 and accepting.coverage == 1.0
