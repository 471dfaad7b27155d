"""Reconcile predictions of real images with real ABID metadata: expected quantities and SKU names read
through the one metadata parser, a threshold chosen on validation predictions, one decision per bin,
and a summary whose accuracy figures follow from the decisions and the true counts."""

import csv
import json

import numpy as np
import pytest

from bincount.cli import main
from bincount.data.records import parse_metadata
from bincount.inventory import (AUDIT, INVALID_COUNT, MATCH, MISMATCH, calibrate, choose_threshold, read_expected,
                                reconcile, summarize)
from bincount.predict import read_predictions


@pytest.mark.parametrize("target, threshold, precision, coverage", [
    (0.75, 0.6, 0.75, 1.0),   # all four kept: 3 of 4 right
    (0.9, 0.8, 1.0, 0.5),     # the 0.7 miss must go
    (0.5, 0.6, 0.75, 1.0),
])
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
    assert main(["reconcile", str(predictions[0]), "--expected", str(table), "--threshold", str(threshold),
                 "--out", str(out), "--summary", str(summary_path)]) == 0
    assert "bins to check" in capsys.readouterr().out
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ids) == 20
    by_id = {p.id: p for p in test_preds}
    for r in rows:
        p = by_id[r["bin_id"]]
        want = AUDIT if p.confidence < threshold else MATCH if p.count == int(r["expected_count"]) else MISMATCH
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
            np.mean([r["true_count"] == r["expected_count"] for r in matches]), abs=1e-4)
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
    assert main(["reconcile", str(predictions[0]), "--expected", str(small_abid), "--calibration",
                 str(predictions[1]), "--target-precision", "0.3", "--out", str(tmp_path / "d.csv")]) == 0


def test_reconcile_without_a_threshold_is_one_clear_error(predictions, small_abid, capsys):
    assert main(["reconcile", str(predictions[0]), "--expected", str(small_abid)]) == 2
    assert "--threshold" in capsys.readouterr().err
