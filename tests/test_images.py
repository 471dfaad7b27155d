"""Images in every mode Pillow opens, made by the test from a real dev-224 photo: converted faithfully
(16-bit integers, floats in [0, 1], palettes and alpha on white, CMYK, EXIF orientation) or refused
with a reason (32-bit integers, floats outside [0, 1], CIELab, too small), and treated the same way by
training, `bincount predict` and the server."""

import base64
import csv
import http.client
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from bincount.cli import main
from bincount.data.dataset import BinImageDataset
from bincount.data.images import MIN_IMAGE_SIDE, ImageError, image_problem, load_rgb
from bincount.data.records import read_abid
from bincount.data.transforms import eval_transform
from bincount.serve.predictor import load_predictor
from bincount.serve.server import start_server


@pytest.fixture(scope="module")
def photo(dev224) -> Image.Image:
    with Image.open(dev224 / "bin-images" / "00004.jpg") as im:
        return im.convert("RGB")


def _save(im: Image.Image, path, **params):
    im.save(path, **params)
    return path


def _pgm16(gray: np.ndarray, path):
    """A 16-bit binary PGM (maxval 65535): Pillow opens it in mode I."""
    h, w = gray.shape
    path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + (gray.astype(">u2") * 257).tobytes())
    return path


def _gray(photo) -> np.ndarray:
    return np.asarray(photo.convert("L"))


def test_sixteen_bit_and_float_images_keep_their_pixels(photo, tmp_path):
    """A 16-bit PNG used to decode as a white image; every high-depth encoding of the photo's gray
    levels now decodes to exactly those gray levels."""
    gray = _gray(photo)
    want = np.repeat(gray[..., None], 3, axis=2)
    files = {
        "png16": _save(Image.fromarray(gray.astype(np.uint16) * 257), tmp_path / "a.png"),
        "tif16": _save(Image.fromarray(gray.astype(np.uint16) * 257), tmp_path / "a.tif"),
        "pgm16": _pgm16(gray, tmp_path / "a.pgm"),
        "float": _save(Image.fromarray(gray.astype(np.float32) / 255), tmp_path / "f.tif"),
    }
    modes = {name: Image.open(p).mode for name, p in files.items()}
    assert modes == {"png16": "I;16", "tif16": "I;16", "pgm16": "I", "float": "F"}
    for name, path in files.items():
        got = np.asarray(load_rgb(path))
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() == 0, name


def test_transparency_palettes_cmyk_and_other_modes(photo, tmp_path):
    rgb = np.asarray(photo).astype(int)
    # RGBA: the left half fully transparent -> white; the right half opaque -> the photo
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, rgb.shape[1] // 2 :] = 255
    rgba = Image.fromarray(np.dstack([np.asarray(photo), alpha]), "RGBA")
    got = np.asarray(load_rgb(_save(rgba, tmp_path / "rgba.png"))).astype(int)
    assert (got[:, : rgb.shape[1] // 2] == 255).all() and (
        got[:, rgb.shape[1] // 2 :] == rgb[:, rgb.shape[1] // 2 :]
    ).all()
    # LA at half opacity: gray over white
    gray = _gray(photo).astype(int)
    la = Image.fromarray(np.dstack([gray.astype(np.uint8), np.full(gray.shape, 128, np.uint8)]), "LA")
    got = np.asarray(load_rgb(_save(la, tmp_path / "la.png")))[..., 0].astype(int)
    assert np.abs(got - (gray * 128 + 255 * 127) / 255).max() <= 1
    # a palette whose entry 0 is transparent: those pixels white, the others their palette colour
    pal = photo.quantize(16)
    index = np.asarray(pal)
    got = np.asarray(load_rgb(_save(pal, tmp_path / "p.png", transparency=0))).astype(int)
    colours = np.asarray(pal.getpalette()[:48]).reshape(16, 3)
    want = np.where((index == 0)[..., None], 255, colours[index])
    assert (index == 0).any() and (got == want).all()
    # CMYK as print workflows save JPEGs: the same picture (within JPEG's loss)
    got = np.asarray(load_rgb(_save(photo.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95))).astype(int)
    assert np.abs(got - rgb).mean() < 4
    # 1-bit and gray
    assert np.asarray(load_rgb(_save(photo.convert("1"), tmp_path / "bw.png"))).max() == 255
    assert (np.asarray(load_rgb(_save(photo.convert("L"), tmp_path / "l.png")))[..., 0] == gray).all()


def test_images_without_a_faithful_rgb_are_refused_with_a_reason(photo, tmp_path):
    gray = _gray(photo)
    cases = {
        "32-bit integer pixels": _save(Image.fromarray(gray.astype(np.int32) * 257), tmp_path / "i32.tif"),
        "floating-point pixels outside 0-1": _save(Image.fromarray(gray.astype(np.float32)), tmp_path / "f255.tif"),
        "unsupported image mode LAB": _save(photo.convert("LAB"), tmp_path / "lab.tif"),
        f"image too small (under {MIN_IMAGE_SIDE} pixels": _save(
            photo.resize((MIN_IMAGE_SIDE - 1, 60)), tmp_path / "s.png"
        ),
        "unreadable image": tmp_path / "half.png",
    }
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    cases["unreadable image"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for reason, path in cases.items():
        assert image_problem(path).startswith(reason), (path, image_problem(path))
        with pytest.raises(ImageError, match=re.escape(reason)):
            load_rgb(path)


def test_exif_orientation_is_applied(photo, tmp_path):
    """A camera stores a portrait photo sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    upright = photo.resize((photo.width, photo.height // 2))  # not square, so a missed rotation shows in the size
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = _save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "side.jpg", exif=exif, quality=95)
    got = load_rgb(sideways)
    assert got.size == upright.size
    assert np.abs(np.asarray(got).astype(int) - np.asarray(upright)).mean() < 4


@pytest.fixture(scope="module")
def odd_folder(dev224, photo, tmp_path_factory):
    """An ABID-layout folder whose images come in unusual encodings, with real metadata, and the picture
    each must be seen as where that is known apart from the decoder (None: a JPEG, whose DCT-scaled decode
    is the reference, or an image to refuse)."""
    root = tmp_path_factory.mktemp("odd-abid")
    (root / "bin-images").mkdir()
    (root / "metadata").mkdir()
    metas = sorted((dev224 / "metadata").glob("*.json"))[:6]
    gray = _gray(photo)
    upright = photo.resize((photo.width, photo.height // 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(jpeg, format="JPEG", exif=exif, quality=95)
    made = {
        "png16": (lambda p: _save(Image.fromarray(gray.astype(np.uint16) * 257), p), ".png", photo.convert("L")),
        "float": (lambda p: _save(Image.fromarray(gray.astype(np.float32) / 255), p), ".tif", photo.convert("L")),
        "sideways": (lambda p: p.write_bytes(jpeg.getvalue()), ".jpg", None),
        "int32": (lambda p: _save(Image.fromarray(gray.astype(np.int32)), p), ".tif", None),
        "tiny": (lambda p: _save(photo.resize((16, 16)), p), ".png", None),
        "plain": (lambda p: _save(photo, p, quality=95), ".jpg", None),
    }
    want = {}
    for (name, (write, suffix, reference)), meta in zip(made.items(), metas):
        write(root / "bin-images" / f"{name}{suffix}")
        shutil.copy(meta, root / "metadata" / f"{name}.json")
        want[name] = reference
    return root, want


def test_training_predict_and_serve_see_the_same_pixels_and_refuse_the_same_images(odd_folder, counter_ckpt, tmp_path):
    root, want = odd_folder
    refused = {"int32": "32-bit integer pixels", "tiny": "image too small"}

    # training: the reader keeps the usable ones and reports the others with the reason
    records, report = read_abid(root, classes=None)
    assert sorted(r.id for r in records) == sorted(set(want) - set(refused))
    for name, reason in refused.items():
        assert [k for k, ids in report.skipped.items() if name in ids][0].startswith(reason)
    predictor = load_predictor(counter_ckpt)
    transform = eval_transform(predictor.image_size)
    for name in want:
        if want[name] is None and name not in refused:  # JPEGs: decoded at 1/8 scale, as every path does
            want[name] = load_rgb(next((root / "bin-images").glob(f"{name}.*")), predictor.image_size)
    counts = sorted({r.count for r in records})
    ds = BinImageDataset(records, counts, transform, decode_size=predictor.image_size)
    for i, rec in enumerate(records):
        x, _ = ds[i]
        assert np.allclose(x.numpy(), transform(want[rec.id].convert("RGB")).numpy(), atol=1e-6), rec.id
    reference = dict(
        zip(
            sorted(want.keys() - refused.keys()),
            predictor.predict([want[n].convert("RGB") for n in sorted(want.keys() - refused.keys())]),
        )
    )

    # predict: the same probabilities; the refused images skipped with the same reasons, exit 1
    out = tmp_path / "p.csv"
    assert main(["predict", str(counter_ckpt), str(root), "--out", str(out), "--quiet"]) == 1
    with out.open(newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(reference)
    for name, probs in reference.items():
        assert np.allclose([float(rows[name][f"p_{c}"]) for c in predictor.classes], probs, atol=1e-5), name

    # serve: the same counts over HTTP, the same refusals as 400s naming the reason
    server = start_server(predictor, port=0)
    try:
        host, port = server.server_address[:2]
        for path in sorted((root / "bin-images").iterdir()):
            conn = http.client.HTTPConnection(host, port, timeout=60)
            body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode()})
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            conn.close()
            if path.stem in refused:
                assert resp.status == 400 and refused[path.stem] in answer["error"], answer
            else:
                got = [answer["predictions"][0]["probabilities"][str(c)] for c in predictor.classes]
                assert resp.status == 200 and np.allclose(got, reference[path.stem], atol=1e-5), path.stem
    finally:
        server.stop()
