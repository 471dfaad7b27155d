"""The local inference server on loopback, spoken to over real HTTP: SageMaker's /ping and
/invocations contract, every kind of bad input refused with a 4xx JSON error, a bounded concurrent
load with zero errors, and models that load without unpickling."""

import base64
import http.client
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bincount.errors import BincountError
from bincount.serve import handler
from bincount.serve.loadtest import load_test
from bincount.serve.predictor import load_predictor
from bincount.serve.server import start_server
from conftest import ids_by_count

MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def predictor(counter_ckpt):
    return load_predictor(counter_ckpt, "torch")


@pytest.fixture(scope="module")
def server(predictor):
    srv = start_server(predictor, host="127.0.0.1", port=0, max_body_bytes=MAX_BODY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def jpegs(dev224):
    return [(dev224 / "bin-images" / f"{i}.jpg").read_bytes() for i in ids_by_count(dev224, 2)]


def request(server, method, path, body=None, headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
    finally:
        conn.close()


def invoke(server, body, content_type="image/jpeg", **headers):
    return request(server, "POST", "/invocations", body, {"Content-Type": content_type, **headers})


def expected_counts(predictor, images: list[bytes]) -> list[int]:
    return [a["count"] for a in predictor.describe(predictor.predict([predictor.load(b) for b in images]))]


def test_ping(server):
    status, ctype, body = request(server, "GET", "/ping")
    assert status == 200 and ctype == "application/json"
    assert body["classes"] == [1, 2, 3, 4, 5] and body["backend"] == "torch"
    assert body["overflow"] is False and body["names"] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image", "image/jpeg; charset=binary"])
def test_a_jpeg_gets_its_count(server, predictor, jpegs, content_type):
    status, _, body = invoke(server, jpegs[0], content_type)
    assert status == 200
    (p,) = body["predictions"]
    assert p["count"] == expected_counts(predictor, jpegs[:1])[0]
    assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert p["confidence"] == pytest.approx(max(p["probabilities"].values()), abs=1e-6)


def test_a_png_gets_the_count_of_its_pixels(server, predictor, jpegs):
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpegs[3])).save(buf, format="PNG")
    status, _, body = invoke(server, buf.getvalue(), "image/png")
    assert status == 200
    assert body["predictions"][0]["count"] == expected_counts(predictor, [buf.getvalue()])[0]


def test_json_single_and_batch(server, predictor, jpegs):
    b64 = [base64.b64encode(b).decode() for b in jpegs]
    status, _, one = invoke(server, json.dumps({"image": b64[0]}), "application/json")
    assert status == 200 and len(one["predictions"]) == 1
    status, _, many = invoke(server, json.dumps({"images": b64}), "application/json; charset=utf-8")
    assert status == 200
    assert [p["count"] for p in many["predictions"]] == expected_counts(predictor, jpegs)
    assert many["predictions"][0] == one["predictions"][0]


def _oversized(jpegs):
    return jpegs[0] + b"\0" * (MAX_BODY + 1)


BAD = {
    "empty body": (lambda j: b"", "image/jpeg", 400),
    "not an image": (lambda j: b"this is a text file, not a photo\n" * 10, "image/jpeg", 400),
    # a GIF header claiming 8255 x 28526 pixels: refused as too large before anything is decoded
    "huge header, no pixels": (lambda j: b"GIF89a? no, just text pretending" * 10, "image/jpeg", 413),
    "random bytes": (lambda j: bytes(range(256)) * 20, "application/x-image", 400),
    "truncated jpeg": (lambda j: j[0][: len(j[0]) // 2], "image/jpeg", 400),
    "oversized body": (_oversized, "image/jpeg", 413),
    "unknown content type": (lambda j: j[0], "text/csv", 415),
    "no content type": (lambda j: j[0], "", 415),
    "invalid json": (lambda j: b'{"image": ', "application/json", 400),
    "json without images": (lambda j: b'{"pictures": []}', "application/json", 400),
    "empty image list": (lambda j: b'{"images": []}', "application/json", 400),
    "bad base64": (lambda j: b'{"image": "***not base64***"}', "application/json", 400),
    "base64 of text": (
        lambda j: json.dumps({"image": base64.b64encode(b"hello").decode()}).encode(),
        "application/json",
        400,
    ),
    "too many images": (
        lambda j: json.dumps({"images": [base64.b64encode(j[0]).decode()] * 65}).encode(),
        "application/json",
        413,
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_json_error_and_the_server_goes_on(server, jpegs, case):
    make, content_type, want = BAD[case]
    status, ctype, body = invoke(server, make(jpegs), content_type)
    assert status == want, body
    assert ctype == "application/json" and body["error"]
    assert request(server, "GET", "/ping")[0] == 200
    assert invoke(server, jpegs[0])[0] == 200


def test_wrong_accept_and_routes(server, jpegs):
    assert invoke(server, jpegs[0], Accept="text/csv")[0] == 406
    assert invoke(server, jpegs[0], Accept="*/*")[0] == 200
    assert request(server, "GET", "/invocations")[0] == 404
    assert request(server, "POST", "/elsewhere", b"x", {"Content-Type": "image/jpeg"})[0] == 404


def test_a_decompression_bomb_is_refused_before_decoding(server, monkeypatch):
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")  # 48 MP of zeros compress to a few kB
    assert len(buf.getvalue()) < MAX_BODY
    status, _, body = invoke(server, buf.getvalue(), "image/png")
    assert status == 413 and "pixels" in body["error"]


def test_bounded_concurrent_load_has_no_errors(server, predictor, jpegs):
    """1,000 requests from 8 client threads on keep-alive connections; every one answered right."""
    want = expected_counts(predictor, jpegs)
    passes_before = server.model.passes
    result = load_test(
        server.url,
        [(b, "image/jpeg") for b in jpegs],
        requests=1000,
        concurrency=8,
        check=lambda i, status, body: status == 200 and json.loads(body)["predictions"][0]["count"] == want[i],
    )
    assert result["errors"] == 0, result["error_samples"]
    assert result["statuses"] == {"200": 1000}
    assert server.model.passes - passes_before < 1000  # concurrent requests shared forward passes
    assert request(server, "GET", "/ping")[0] == 200


def test_the_load_test_only_targets_this_machine():
    with pytest.raises(BincountError, match="only targets servers on this machine"):
        load_test("http://192.0.2.1:8080", [(b"x", "image/jpeg")], requests=1)


# -- the handler as SageMaker's container calls it -------------------------------------------------
def test_handler_functions_follow_the_sagemaker_contract(counter_ckpt, tmp_path, jpegs):
    from bincount.serve.export import export_model

    export_model(counter_ckpt, tmp_path)
    model = handler.model_fn(str(tmp_path))
    # The toolkit decodes JSON bodies to str before calling input_fn.
    data = handler.input_fn(
        json.dumps({"images": [base64.b64encode(b).decode() for b in jpegs[:3]]}), "application/json"
    )
    answer, content_type = handler.output_fn(handler.predict_fn(data, model), "application/json")
    assert content_type == "application/json"
    direct = load_predictor(counter_ckpt)
    got = json.loads(answer)["predictions"]
    assert [p["count"] for p in got] == expected_counts(direct, jpegs[:3])
    with pytest.raises(handler.RequestError) as e:
        handler.input_fn(b"", "image/png")
    assert e.value.status_code == 400


class _Payload:
    ran = False

    def __reduce__(self):
        return (setattr, (_Payload, "ran", True))


def test_a_checkpoint_with_pickled_objects_is_refused_not_unpickled(counter_ckpt, tmp_path):
    ckpt = torch.load(counter_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["extra"] = _Payload()
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    _Payload.ran = False
    with pytest.raises(BincountError, match="weights_only"):
        load_predictor(evil)
    assert _Payload.ran is False


def test_predictor_agrees_with_the_lightning_model_on_eval_preprocessing(counter_ckpt, predictor, dev224):
    """The served preprocessing is the evaluation transform: same probabilities as CountingModel on
    the data module's own test dataset."""
    from bincount.data.dataset import BinImageDataset
    from bincount.data.records import read_abid
    from bincount.data.transforms import eval_transform
    from bincount.model.counter import CountingModel

    model = CountingModel.load_from_checkpoint(counter_ckpt, map_location="cpu", weights_only=True).eval()
    records, _ = read_abid(dev224, check_images=False)
    records = [r for r in records if r.count in (1, 2, 3, 4, 5)][:16]
    ds = BinImageDataset(records, model.classes, eval_transform(32), decode_size=32)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        want = model(x).softmax(1).numpy()
    got = predictor.predict([predictor.load(r.image) for r in records])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_serve_command_serves_an_exported_model_until_interrupted(counter_ckpt, tmp_path, jpegs):
    import signal
    import socket
    import subprocess
    import sys

    from bincount.serve.export import export_model

    export_model(counter_ckpt, tmp_path / "model", onnx=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bincount.cli",
            "serve",
            str(tmp_path / "model"),
            "--backend",
            "onnx",
            "--port",
            str(port),
            "--max-body-mb",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        # SIGINT ignored, as in a script's `&` job (the whole suite started so hung here for 60 s): Ctrl-C must
        # stop the server all the same
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert "serving" in proc.stdout.readline()  # printed once the socket listens
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/ping")
        assert json.loads(conn.getresponse().read())["backend"] == "onnx"
        conn.request("POST", "/invocations", body=jpegs[0], headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        assert resp.status == 200 and len(json.loads(resp.read())["predictions"]) == 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


# -- edges of HTTP itself -----------------------------------------------------------------------
def raw_exchange(server, data: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    import socket

    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict]]:
    """The (status, JSON body) of every HTTP response in ``raw``."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        n = int(headers["Content-Length"])
        assert headers["Content-Type"] == "application/json", headers
        out.append((int(lines[0].split()[1]), json.loads(rest[:n])))
        raw = rest[n:]
    return out


def test_a_post_without_content_length_gets_411_and_its_body_is_never_a_request(server):
    smuggled = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    got = responses(
        raw_exchange(server, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\r\n" + smuggled)
    )
    assert [s for s, _ in got] == [411] and "Content-Length" in got[0][1]["error"]  # one answer, then closed
    assert request(server, "GET", "/ping")[0] == 200


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"POST /invocations HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"POST /invocations HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"PUT /invocations HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501),
        (b"GET /ping HTTP/2.0\r\n\r\n", 505),
        (b"POST /invocations HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello", 400),
    ],
)
def test_the_standard_librarys_refusals_are_json_too(server, raw, status):
    got = responses(raw_exchange(server, raw))
    assert [s for s, _ in got] == [status] and got[0][1]["error"]
    assert request(server, "GET", "/ping")[0] == 200


def test_a_huge_png_is_413_before_decoding(server):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 20000  # 400 million pixels of 1-bit gray, 50 MB raw, about 50 kB compressed
    rows = zlib.compress(bytes(side * (1 + side // 8)), 9)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
    assert len(png) < MAX_BODY
    status, _, body = invoke(server, png, "image/png")
    assert status == 413 and "too large" in body["error"]


def test_base64_as_clients_write_it(server, predictor, jpegs):
    want = expected_counts(predictor, jpegs[:1])
    for text in (
        base64.encodebytes(jpegs[0]).decode(),  # MIME: a line break every 76 characters
        "data:image/jpeg;base64," + base64.b64encode(jpegs[0]).decode(),
        base64.urlsafe_b64encode(jpegs[0]).decode().rstrip("="),
    ):
        status, _, body = invoke(server, json.dumps({"image": text}), "application/json")
        assert status == 200 and [p["count"] for p in body["predictions"]] == want


def test_an_overflow_model_answers_at_least_for_more_than_k(abid, dev224, tmp_path):
    """A model with counts 0-5 and "more than 5", served on loopback, on real photos of bins of 0-5 and
    6-20 items: each answer is an exact count or at_least 6, as the predictor says, with every class's
    probability keyed by its name."""
    from helpers.counters import mixed_counter

    over5 = abid / "over5-224"
    paths = [dev224 / "bin-images" / f"{i}.jpg" for i in ids_by_count(dev224, 1, (0, 1, 2, 3, 4, 5))]
    paths += [over5 / "bin-images" / f"{i}.jpg" for i in ids_by_count(over5, 2, (6, 12, 20))]
    predictor = load_predictor(mixed_counter(tmp_path / "m.ckpt", paths), "torch")
    srv = start_server(predictor, host="127.0.0.1", port=0)
    try:
        status, _, ping = request(srv, "GET", "/ping")
        assert ping["classes"] == [0, 1, 2, 3, 4, 5] and ping["overflow"] is True and ping["names"][-1] == "6+"
        body = json.dumps({"images": [base64.b64encode(p.read_bytes()).decode() for p in paths]})
        status, _, answer = invoke(srv, body, "application/json")
    finally:
        srv.stop()
    assert status == 200
    probs = predictor.predict([predictor.load(p) for p in paths])
    got = answer["predictions"]
    assert [{k: v for k, v in a.items() if k in ("count", "at_least")} for a in got] == predictor.describe(probs)
    assert {"at_least"} < {k for a in got for k in a} and any("count" in a for a in got)  # both kinds
    for a, p in zip(got, probs):
        assert list(a["probabilities"]) == ["0", "1", "2", "3", "4", "5", "6+"]
        np.testing.assert_allclose(list(a["probabilities"].values()), p, atol=1e-5)
        assert ("count" in a) != ("at_least" in a) and a.get("at_least", 6) == 6
        assert a["confidence"] == pytest.approx(p.max(), abs=1e-6)
