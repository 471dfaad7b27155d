"""A small synthetic ABID-layout folder, made on the spot: ``bin-images/<id>.jpg`` with N coloured boxes
on a grey background for a bin of N items, and ``metadata/<id>.json`` in the dataset's own format
(EXPECTED_QUANTITY, BIN_FCSKU_DATA with ASIN, name, quantity, weight and dimensions). Tests of pure
logic (split, config, commands) and the installed-wheel test run on it without ../shared/abid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_synthetic_abid(
    root: Path, per_count: int | dict[int, int] = 12, counts=(1, 2, 3, 4, 5), size: int = 48, seed: int = 0
) -> Path:
    """``per_count`` bins of every count in ``counts`` (or ``{count: bins}``); ids 00001, 00002, ... in count
    order. Returns ``root``."""
    sizes = per_count if isinstance(per_count, dict) else {c: per_count for c in counts}
    rng = np.random.default_rng(seed)
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    n = 0
    for count, bins in sizes.items():
        for _ in range(bins):
            n += 1
            bin_id = f"{n:05d}"
            image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(90, 140, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(count):
                x, y = (int(v) for v in rng.integers(0, size - 10, 2))
                side = int(rng.integers(6, 12))
                draw.rectangle((x, y, x + side, y + side), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            image.save(root / "bin-images" / f"{bin_id}.jpg", quality=90)
            skus = _skus(count, rng)
            (root / "metadata" / f"{bin_id}.json").write_text(
                json.dumps({"BIN_FCSKU_DATA": skus, "EXPECTED_QUANTITY": count}, indent=4)
            )
    return root


def _skus(count: int, rng: np.random.Generator) -> dict:
    """``count`` items spread over one or two SKUs."""
    quantities = [count] if count == 1 or rng.random() < 0.5 else [count - 1, 1]
    skus = {}
    for q in quantities:
        asin = "B0" + "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), 8))

        def inches():
            return {"unit": "IN", "value": float(rng.uniform(1, 12))}

        skus[asin] = {
            "asin": asin,
            "name": f"synthetic item {asin}",
            "normalizedName": f"synthetic item {asin}",
            "quantity": q,
            "weight": {"unit": "pounds", "value": float(rng.uniform(0.1, 3))},
            "length": inches(),
            "width": inches(),
            "height": inches(),
        }
    return skus
