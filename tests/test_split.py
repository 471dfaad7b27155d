"""Splits and manifests: pure logic, on a synthetic ABID folder (no real images needed) whose classes have
unequal sizes, as ABID's do."""

from collections import Counter

import pytest

from bincount.data.records import BinRecord, read_abid
from bincount.data.split import ABSENT, RELABELLED, UNLISTED, apply_manifest, split_records, write_manifest
from bincount.errors import BincountError
from helpers.synthetic_abid import make_synthetic_abid

SIZES = {1: 60, 2: 110, 3: 130, 4: 115, 5: 90}  # dev-224's shape: count 1 is the smallest class


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = make_synthetic_abid(tmp_path_factory.mktemp("abid-split"), per_count=SIZES, size=16)
    return read_abid(root, classes=[1, 2, 3, 4, 5], check_images=False)[0]


def ids(split):
    return {s: [r.id for r in v] for s, v in split.items()}


def test_split_is_deterministic_and_seeded(records):
    a, b = split_records(records, seed=7), split_records(list(reversed(records)), seed=7)
    assert ids(a) == ids(b)
    assert ids(split_records(records, seed=8))["test"] != ids(a)["test"]


def test_splits_are_disjoint_and_cover_everything(records):
    s = split_records(records)
    sets = [set(ids(s)[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(x) for x in sets) == len(records)
    assert len(sets[0]) == pytest.approx(0.8 * len(records), abs=5)


def test_stratified_keeps_class_shares(records):
    s = split_records(records)
    total = Counter(r.count for r in records)
    for part, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        got = Counter(r.count for r in s[part])
        for c in total:
            assert got[c] == pytest.approx(frac * total[c], abs=1)


def test_balanced_gives_equal_images_per_class(records):
    s = split_records(records, strategy="balanced")
    for part in ("train", "val", "test"):
        per_class = Counter(r.count for r in s[part])
        assert len(set(per_class.values())) == 1, per_class
    assert sum(len(v) for v in s.values()) == 5 * SIZES[1]  # count 1 is the smallest class


def test_manifest_round_trip_reproduces_split(records, tmp_path):
    s = split_records(records, seed=3, limit_per_class=50)
    path = write_manifest(s, tmp_path / "m.csv")
    again, misfits = apply_manifest(records, path)
    assert ABSENT not in misfits and RELABELLED not in misfits
    assert len(misfits[UNLISTED]) == len(records) - 250  # the rest of the folder is named as left out
    assert {k: sorted(v) for k, v in ids(again).items()} == {k: sorted(v) for k, v in ids(s).items()}


def test_manifest_reports_ids_it_cannot_use(records, tmp_path):
    s = split_records(records[:100])
    path = write_manifest(s, tmp_path / "m.csv")
    changed = [BinRecord(r.id, r.image, r.count + 1, r.skus) for r in records[10:13]]  # metadata changed since
    again, misfits = apply_manifest(records[13:] + changed, path)
    assert misfits[ABSENT] == sorted(r.id for r in records[:10])
    assert misfits[RELABELLED] == sorted(r.id for r in changed)
    assert misfits[UNLISTED] == sorted(r.id for r in records[100:])
    assert not {r.id for r in records[:13]} & {r.id for part in again.values() for r in part}


def test_bad_split_options_name_the_key(records):
    with pytest.raises(BincountError, match="data.split"):
        split_records(records, strategy="random")
    with pytest.raises(BincountError, match="data.ratios"):
        split_records(records, ratios=(0.5, 0.5, 0.5))
