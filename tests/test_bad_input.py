"""Corrupt, truncated and non-image files, broken metadata and out-of-class counts are skipped,
counted and reported; nothing crashes and nothing gets a wrong label."""

import json
import shutil

from bincount.data.datamodule import BinDataModule
from bincount.data.records import read_abid
from conftest import ids_by_count, make_abid_slice


def _damage(dev224, tmp_path):
    ids = ids_by_count(dev224, 6)
    folder = make_abid_slice(dev224, tmp_path / "abid", ids)
    img = lambda i: folder / "bin-images" / f"{i}.jpg"  # noqa: E731
    meta = lambda i: folder / "metadata" / f"{i}.json"  # noqa: E731
    good = (dev224 / "bin-images" / f"{ids[0]}.jpg").read_bytes()
    bad = {}
    for i, name in zip(ids[:6], ("truncated", "random", "text", "empty", "nometa", "badjson")):
        bad[name] = i
    for name in ("truncated", "random", "text", "empty"):
        img(bad[name]).unlink()
    img(bad["truncated"]).write_bytes(good[: len(good) // 2])
    img(bad["random"]).write_bytes(bytes(range(256)) * 40)
    img(bad["text"]).write_text("this is not an image\n")
    img(bad["empty"]).write_bytes(b"")
    meta(bad["nometa"]).unlink()
    meta(bad["badjson"]).write_text('{"EXPECTED_QUANTITY": 3,')
    # a bin of 9 items: outside the classes
    doc = json.loads(meta(ids[6]).read_text())
    doc["EXPECTED_QUANTITY"] = 9
    meta(ids[6]).write_text(json.dumps(doc))
    bad["outside"] = ids[6]
    # an image with no metadata and metadata with no image
    shutil.copy(dev224 / "bin-images" / f"{ids[0]}.jpg", folder / "bin-images" / "orphan.jpg")
    img(ids[7]).unlink()
    bad["noimage"] = ids[7]
    return folder, ids, bad


def test_every_defect_is_skipped_with_its_reason(dev224, tmp_path):
    folder, ids, bad = _damage(dev224, tmp_path)
    records, report = read_abid(folder, classes=[1, 2, 3, 4, 5])
    kept = {r.id for r in records}
    assert kept == set(ids) - set(bad.values())
    s = report.skipped
    assert sorted(s["metadata missing"]) == sorted([bad["nometa"], "orphan"])
    assert s["metadata malformed"] == [bad["badjson"]]
    assert s["count not in classes"] == [bad["outside"]]
    assert s["image missing"] == [bad["noimage"]]
    unreadable = [i for k, v in s.items() if k.startswith("unreadable image") for i in v]
    assert sorted(unreadable) == sorted(bad[k] for k in ("truncated", "random", "text", "empty"))
    assert report.total == len(bad) + 1
    # labels of what was kept are the metadata's
    for r in records:
        assert r.count == json.loads((dev224 / "metadata" / f"{r.id}.json").read_text())["EXPECTED_QUANTITY"]


def test_datamodule_writes_data_report_and_loads_only_good_images(dev224, tmp_path):
    folder, ids, bad = _damage(dev224, tmp_path)
    dm = BinDataModule(str(folder), image_size=32, batch_size=8, num_workers=0, output_dir=str(tmp_path / "run"))
    dm.setup("fit")
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["skipped"]["total"] == len(bad) + 1
    assert bad["truncated"] in [i for v in report["skipped"]["ids"].values() for i in v]
    n = sum(report["images"].values())
    assert n == len(ids) - len(bad)
    seen = 0
    for split in ("train", "val", "test"):
        for x, _ in dm.dataset(split):
            assert x.shape == (3, 32, 32)
            seen += 1
    assert seen == n
