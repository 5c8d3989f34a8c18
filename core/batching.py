"""Dynamic batching: many concurrent callers, one batched function call.

`DynamicBatcher(fn)` runs `fn(items) -> results` on a worker thread. Coroutines call
`await batcher.submit_many(items)`; the worker takes everything queued, up to
`max_batch` items, waiting at most `max_wait_s` after the oldest queued item arrived
for more to join (so a lone item waits at most that long, and items that queued while
the worker was busy go at once). This is how embedding servers such as Hugging Face's
text-embeddings-inference turn concurrent requests into full forward passes.

The queue is bounded: `submit_many` raises `QueueFull` at once when the items would not
fit (callers answer "try again later", the queue never grows without limit). A
request's items are admitted all or none.

`close(drain=True)` stops admitting, finishes what is queued, and joins the worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The batcher's queue cannot take the items now; retry later."""


class BatcherClosed(Exception):
    """The batcher is shutting down and admits no new items."""


@dataclass
class _Job(Generic[T]):
    item: T
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float


def _resolve(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _hand_back(job: _Job, result: object, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
        job.loop.call_soon_threadsafe(_resolve, job.future, result, error)


class DynamicBatcher(Generic[T, R]):
    """Batch items from concurrent coroutines into calls of `fn` on one worker thread.

    `fn` gets a list of at most `max_batch` items and returns one result per item, in
    order. `on_batch(size, seconds)` is called after each call (e.g. for metrics).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch and max_queue must be >= 1 and max_wait_s >= 0, "
                f"got {max_batch}, {max_queue}, {max_wait_s}"
            )
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: collections.deque[_Job[T]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0  # items in the batch being computed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not counting the batch being computed)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Items queued or being computed."""
        with self._cond:
            return len(self._queue) + self._busy

    async def submit(self, item: T) -> R:
        """The result of `fn` for one item."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Results for `items`, in order; `QueueFull` if they do not fit in the queue now."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [_Job(item, loop.create_future(), loop, now) for item in items]
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) + len(jobs) > self.max_queue:
                raise QueueFull(
                    f"embedding queue is full ({len(self._queue)} of {self.max_queue} queued, "
                    f"{len(jobs)} more asked)"
                )
            self._queue.extend(jobs)
            self._cond.notify()
        return list(await asyncio.gather(*(j.future for j in jobs)))

    def _take(self) -> list[_Job[T]] | None:
        """Block until a batch is ready; None when closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued_at + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._busy = n
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            t0 = time.perf_counter()
            results: Sequence[R] = []
            error: BaseException | None = None
            try:
                results = self.fn([j.item for j in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batched function returned {len(results)} results for {len(batch)}")
            except BaseException as exc:  # handed to every caller of this batch
                error = exc
            seconds = time.perf_counter() - t0
            for i, job in enumerate(batch):
                _hand_back(job, None if error is not None else results[i], error)
            with self._cond:
                self._busy = 0
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Admit nothing new; finish the queue (`drain`) or fail it, then stop the worker."""
        with self._cond:
            self._closed = True
            if not drain:
                while self._queue:
                    job = self._queue.popleft()
                    _hand_back(job, None, BatcherClosed("the server is shutting down"))
            self._cond.notify_all()
        self._thread.join(timeout)
