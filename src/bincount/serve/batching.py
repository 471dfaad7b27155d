"""Dynamic batching: requests that arrive while a forward pass runs go into the next pass together.

Request threads only decode (PIL releases the GIL); the one worker thread runs every torch operation,
transform and forward alike, so torch's thread pool is never entered from many threads at once.

Greedy by default (``max_wait_ms=0``): a lone request is never delayed, and under load the batch
grows by itself to whatever queued up, up to ``max_batch`` images.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bincount.serve.predictor import Predictor


@dataclass
class _Job:
    items: list  # PIL images or preprocessed tensors
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class BatchingPredictor:
    """A predictor whose ``predict`` may be called from many threads; one worker runs the passes."""

    def __init__(self, predictor: Predictor, max_batch: int = 32, max_wait_ms: float = 0.0):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1000
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="bincount-batcher", daemon=True)
        self._worker.start()
        self.passes = self.images = 0  # forward passes run and images they held: images/passes = mean batch

    def __getattr__(self, name):  # classes, load, counts, hparams, backend: the wrapped predictor's
        return getattr(self.predictor, name)

    def predict(self, images) -> np.ndarray:
        job = _Job(list(images))
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            try:
                job = (
                    self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    if self.max_wait
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.items)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            try:
                probs = self.predictor.predict([item for j in jobs for item in j.items])
                self.passes, self.images = self.passes + 1, self.images + len(probs)
                start = 0
                for j in jobs:
                    j.result, start = probs[start : start + len(j.items)], start + len(j.items)
            except Exception as e:  # every waiting request hears about it; the worker goes on
                for j in jobs:
                    j.error = e
            for j in jobs:
                j.done.set()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)
