import json
from collections import Counter

import pytest

from bincount.data.images import image_problem
from bincount.data.records import load_file_list, parse_metadata, read_abid
from bincount.errors import BincountError
from conftest import ids_by_count, make_abid_slice


def test_labels_are_expected_quantity_on_real_metadata(dev224):
    records, report = read_abid(dev224, classes=None, check_images=False)
    assert report.total == 0
    assert len(records) == 5299
    # the dataset README's published class counts
    assert Counter(r.count for r in records) == {0: 179, 1: 596, 2: 1091, 3: 1338, 4: 1168, 5: 927}
    rec = next(r for r in records if r.id == "00004")
    assert rec.count == 5 and len(rec.skus) == 3
    assert {s.asin for s in rec.skus} == {"B003E72M1G", "B00CLCIQDI", "B00H47IY4G"}
    assert sum(s.quantity for s in rec.skus) == 5


def test_count_falls_back_to_sum_of_sku_quantities(dev224):
    meta = json.loads((dev224 / "metadata" / "00004.json").read_text())
    del meta["EXPECTED_QUANTITY"]
    assert parse_metadata(meta)[0] == 5
    meta["EXPECTED_QUANTITY"] = -1
    assert parse_metadata(meta)[0] is None  # present but invalid: not silently replaced
    assert parse_metadata({"BIN_FCSKU_DATA": {}})[0] is None


def test_classes_filter_reports_excluded_counts(dev224):
    records, report = read_abid(dev224, classes=[1, 2, 3, 4, 5], check_images=False)
    assert len(records) == 5120
    assert set(r.count for r in records) == {1, 2, 3, 4, 5}
    assert report.summary() == {"count not in classes": 179}
    with_empty, _ = read_abid(dev224, classes=range(6), check_images=False)
    assert len(with_empty) == 5299


def test_file_list_restricts_ids_and_flags_disagreeing_counts(dev224, tmp_path):
    ids = ids_by_count(dev224, 3)
    folder = make_abid_slice(dev224, tmp_path / "abid", ids)
    listed = {str(c): [] for c in range(1, 6)}
    for i in ids[:10]:
        c = json.loads((dev224 / "metadata" / f"{i}.json").read_text())["EXPECTED_QUANTITY"]
        listed[str(c)].append(f"data/metadata/{i}.json")
    # one id filed under the wrong count (it holds 4 items), one id the folder does not have
    wrong = ids[10]
    listed["1"].append(f"data/metadata/{wrong}.json")
    listed["2"].append("data/metadata/99999999.json")
    fl = tmp_path / "file_list.json"
    fl.write_text(json.dumps(listed))
    assert load_file_list(fl)[ids[0]] == 1
    records, report = read_abid(folder, file_list=fl)
    assert sorted(r.id for r in records) == sorted(ids[:10])
    assert report.skipped["count disagrees with file_list"] == [wrong]
    assert report.skipped["listed in file_list but absent"] == ["99999999"]


def test_shared_file_list_matches_dev224_labels(abid):
    listed = load_file_list(abid / "file_list.json")
    assert len(listed) == 10441
    records, report = read_abid(abid / "dev-224", file_list=abid / "file_list.json", check_images=False)
    assert len(records) == 5120
    assert all(listed[r.id] == r.count for r in records)
    assert "count disagrees with file_list" not in report.skipped


def test_not_an_abid_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BincountError, match="data.root: .* not an ABID-layout folder"):
        read_abid(tmp_path)


def test_check_image_accepts_real_originals(abid):
    assert image_problem(abid / "raw" / "bin-images" / "00001.jpg") is None
