"""One inference scheduler per device: every camera's inference calls go through one fair queue.

Without it each camera thread calls the runtime on its own: on a 2-core box two cameras' calls run at the
same time, each with all the cores' threads, and a camera asking for more than the box can give slows every
other camera down. `InferenceScheduler` runs one call at a time in its own thread, in arrival order; a camera
thread waits for its own call, so each camera has at most one call queued and arrival order is round-robin
between cameras: a camera that asks too much gets at most its share, the others keep their rate. Calls of
several cameras waiting together are joined into one runtime call when their inputs have the same size and
the total stays within ``max_batch`` images (the runtime gains from bigger calls on a GPU; on a CPU
``model.max_batch`` is small and calls rarely join).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class _Call:
    blob: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    out: np.ndarray | None = None
    error: BaseException | None = None


class InferenceScheduler:
    """A fair queue in front of ``run`` (NCHW blob -> outputs), shared by all cameras of a device."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int | None = None) -> None:
        self._run = run
        self.max_batch = max_batch
        self._queue: deque[_Call] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.calls = 0  # runtime calls made
        self.requests = 0  # calls asked for (more than `calls` when several were joined)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the inference thread (the first `infer` does it too)."""
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
                self._thread.start()

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Queue ``blob``, wait for its turn and return its outputs (errors are raised in the caller)."""
        call = _Call(blob)
        self.start()
        with self._cv:
            if self._closed:
                raise RuntimeError("the inference scheduler is closed")
            self._queue.append(call)
            self._cv.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.out is not None
        return call.out

    def close(self) -> None:
        """Stop the scheduler thread once the queued calls are done."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(5)

    def take(self) -> list[_Call]:
        """The next calls to run together: the oldest, plus later ones of the same input size that fit."""
        first = self._queue.popleft()
        group, images = [first], len(first.blob)
        limit = sys.maxsize if self.max_batch is None else self.max_batch
        for call in list(self._queue):
            if images + len(call.blob) > limit or call.blob.shape[1:] != first.blob.shape[1:]:
                continue
            self._queue.remove(call)
            group.append(call)
            images += len(call.blob)
        return group

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                group = self.take()
            self.requests += len(group)
            self.calls += 1
            try:
                blob = group[0].blob if len(group) == 1 else np.concatenate([c.blob for c in group])
                out = self._run(blob)
                start = 0
                for call in group:
                    call.out = out[start : start + len(call.blob)]
                    start += len(call.blob)
            except BaseException as exc:  # handed to the waiting camera threads
                for call in group:
                    call.error = exc
            for call in group:
                call.done.set()
