"""A bounded load test of a local inference server: N requests from C client threads, each on its own
keep-alive connection; latency percentiles, throughput and every error. Loopback only: it is meant for
sizing a server on this machine, not for sending traffic elsewhere.

``bincount loadtest http://127.0.0.1:8080 IMAGES... --requests 1000 --concurrency 8``
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np

from bincount.errors import BincountError

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def _loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        return False


def load_test(
    url: str,
    bodies: list[tuple[bytes, str]],
    requests: int = 1000,
    concurrency: int = 8,
    check: Callable[[int, int, bytes], bool] | None = None,
    timeout: float = 60.0,
) -> dict:
    """Send ``requests`` POSTs to ``url``/invocations, cycling through ``bodies`` (bytes, content type).
    ``check(i, status, body)`` judges an answer to ``bodies[i]`` (default: status 200)."""
    parts = urlsplit(url)
    if not parts.hostname or not _loopback(parts.hostname):
        raise BincountError(f"{url}: the load test only targets servers on this machine (127.0.0.1, localhost)")
    if not bodies:
        raise BincountError("the load test needs at least one request body")
    check = check or (lambda i, status, body: status == 200)
    latencies = np.zeros(requests)
    statuses: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        for n in range(k, requests, concurrency):
            i = n % len(bodies)
            started = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=bodies[i][0], headers={"Content-Type": bodies[i][1]})
                resp = conn.getresponse()
                body = resp.read()
                ok, status = check(i, resp.status, body), resp.status
            except Exception as e:  # a dropped connection is an error too: count it, reconnect, go on
                ok, status, body = False, type(e).__name__, repr(e).encode()
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
            latencies[n] = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                if not ok:
                    errors.append(f"request {n}: {status} {body[:200]!r}")
        conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    seconds = time.perf_counter() - started
    ms = latencies * 1000
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": len(errors),
        "error_samples": errors[:5],
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(seconds, 3),
        "throughput_rps": round(requests / seconds, 2),
        "latency_ms": {
            q: round(float(np.percentile(ms, p)), 2) for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
    }
