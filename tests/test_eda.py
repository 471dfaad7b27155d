"""`bincount eda` on real ABID folders: figures checked against the metadata, plots written."""

from __future__ import annotations

import json

from PIL import Image

from bincount.cli import main
from bincount.data.eda import eda
from bincount.data.prepare import prepare
from conftest import ids_by_count, make_abid_slice


def test_eda_reports_counts_sizes_skus_weights_and_dimensions(abid, tmp_path):
    raw = abid / "raw"
    ids = ids_by_count(raw, 5, counts=(0, 1, 2, 3, 7))
    src = make_abid_slice(raw, tmp_path / "raw", ids)
    metas = [json.loads((raw / "metadata" / f"{i}.json").read_text()) for i in ids]
    out = tmp_path / "eda"
    summary = eda(src, out)

    assert summary["bins"] == 25 and summary["images_per_count"] == {str(c): 5 for c in (0, 1, 2, 3, 7)}
    sizes = [Image.open(raw / "bin-images" / f"{i}.jpg").size for i in ids]
    assert sum(summary["image_sizes"].values()) <= 25 and summary["unreadable_images"] == 0
    widest = max(set(sizes), key=sizes.count)
    assert summary["image_sizes"][f"{widest[0]}x{widest[1]}"] == sizes.count(widest)
    skus = [s for m in metas for s in m["BIN_FCSKU_DATA"].values()]
    assert summary["skus"] == len(skus)
    assert summary["distinct_asins"] == len({s["asin"] for s in skus})
    assert summary["distinct_skus_per_bin"]["max"] == max(len(m["BIN_FCSKU_DATA"]) for m in metas)
    weights = [s["weight"]["value"] for s in skus if isinstance(s.get("weight"), dict)]  # some SKUs have none
    assert summary["sku_weight_lb"]["n"] == len(weights)
    assert summary["sku_weight_lb"]["max"] == round(max(weights), 3)
    assert summary["items_per_bin"]["mean"] == round(sum(m["EXPECTED_QUANTITY"] for m in metas) / 25, 3)

    assert json.loads((out / "eda.json").read_text()) == summary
    markdown = (out / "eda.md").read_text()
    for plot in ("counts", "image_sizes", "skus", "weights", "dimensions"):
        with Image.open(out / f"{plot}.png") as im:
            assert im.format == "PNG" and im.width > 300
        assert f"]({plot}.png)" in markdown
    assert "| 7 | 5 |" in markdown


def test_eda_command_reads_a_prepared_folder(abid, tmp_path, capsys):
    raw = abid / "raw"
    prepared = tmp_path / "prepared"
    prepare(make_abid_slice(raw, tmp_path / "raw", ids_by_count(raw, 3)), prepared, size=32, workers=1)
    assert main(["eda", str(prepared), "--out", str(tmp_path / "eda")]) == 0
    assert "15 bins" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eda" / "eda.json").read_text())
    assert summary["image_sizes"] == {"32x32": 15}
