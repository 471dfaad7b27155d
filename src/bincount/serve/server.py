"""A local HTTP server speaking SageMaker's inference container contract: ``GET /ping`` and
``POST /invocations``, through the same handler functions the endpoint runs.

The standard library's threading server (no extra dependency): one thread per connection decodes
its images in parallel, and a single batching worker runs the forward passes. Every refusal is a
JSON ``{"error": ...}`` with a 4xx status (the standard library's own refusals too), and the
server keeps serving. A POST without Content-Length gets 411 and the connection is closed, so no body
is ever read as a request.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bincount.serve import handler
from bincount.serve.batching import BatchingPredictor
from bincount.serve.predictor import Predictor

log = logging.getLogger(__name__)

JSON = "application/json"
DEFAULT_MAX_BODY = 6 * 1024 * 1024  # SageMaker's own limit for a real-time invocation payload
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read and dropped, so the client hears 413


class InferenceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], model: BatchingPredictor, max_body_bytes: int = DEFAULT_MAX_BODY):
        self.model, self.max_body_bytes = model, max_body_bytes
        super().__init__(address, _RequestHandler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> InferenceServer:
        self._thread = threading.Thread(target=self.serve_forever, name="bincount-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.model.close()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server_version = "bincount"
    timeout = 60  # a client that stalls mid-request frees its thread after this
    server: InferenceServer

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: str | dict, content_type: str = JSON) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's refusals (a malformed request line, too many or too long headers, an
        unsupported method or HTTP version) as JSON like every other refusal, and the connection closed:
        after a request it could not parse, the server cannot know where the next one starts."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the request line was not understood: still a status line
            self.request_version = "HTTP/1.0"
        short, long = self.responses.get(code, ("error", ""))
        text = message or short
        if explain or long:
            text = f"{text}: {explain or long}"
        self._send(code, {"error": text})

    def do_GET(self):
        if self.path == "/ping":
            model = self.server.model
            self._send(
                200,
                {
                    "status": "healthy",
                    "backend": model.backend,
                    "classes": model.classes,  # the exact counts
                    "overflow": model.counts.overflow,  # whether it also answers "more than K"
                    "names": model.counts.names,  # every class, as the probabilities are keyed
                },
            )
        elif self.path == "/execution-parameters":  # asked by SageMaker batch transform
            self._send(
                200,
                {
                    "MaxConcurrentTransforms": 4,
                    "BatchStrategy": "MULTI_RECORD",
                    "MaxPayloadInMB": max(1, self.server.max_body_bytes // (1024 * 1024)),
                },
            )
        else:
            self._error(404, f"no route GET {self.path}; use GET /ping or POST /invocations")

    def _read_body(self) -> bytes | None:
        """The request body, or None once an error has been answered."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._error(411, "chunked bodies are not accepted; send Content-Length")
            return None
        declared = self.headers.get_all("Content-Length") or []
        if not declared:  # whatever follows would be read as the next request: refuse and hang up
            self.close_connection = True
            self._error(411, "Content-Length is required on POST; send the body's length in bytes")
            return None
        try:
            length = int(declared[0]) if len(set(declared)) == 1 and declared[0].strip().isdigit() else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._error(400, "Content-Length must be given once, as a non-negative integer")
            return None
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            if length <= DRAIN_FACTOR * limit:
                self.rfile.read(length)
            self._error(
                413,
                f"the body is {length} bytes, over this server's limit of {limit}; "
                "send a smaller image or raise --max-body-mb",
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-body
            self.close_connection = True
            return None
        return body

    def do_POST(self):
        body = self._read_body()
        if body is None:
            return
        if self.path != "/invocations":
            self._error(404, f"no route POST {self.path}; use POST /invocations")
            return
        try:
            data = handler.input_fn(body, self.headers.get("Content-Type"))
            prediction = handler.predict_fn(data, self.server.model)
            answer, content_type = handler.output_fn(prediction, self.headers.get("Accept"))
        except handler.RequestError as e:
            self._error(e.status_code, e.message)
            return
        except Exception as e:  # a bug, not the client's fault: say so, log it, keep serving
            log.exception("inference failed")
            self._error(500, f"inference failed ({type(e).__name__}); see the server log")
            return
        self._send(200, answer, content_type)


def start_server(
    model: Predictor,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_batch: int = 32,
    max_wait_ms: float = 0.0,
) -> InferenceServer:
    """Serve ``model`` in a background thread (port 0: a free port; see ``server.url``)."""
    return InferenceServer((host, port), BatchingPredictor(model, max_batch, max_wait_ms), max_body_bytes).start()
