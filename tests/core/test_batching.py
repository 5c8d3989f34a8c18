"""`core.batching.DynamicBatcher`: batches concurrent submissions, bounds its queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.batching import BatcherClosed, DynamicBatcher, QueueFull


def test_concurrent_items_share_calls_and_keep_order() -> None:
    sizes: list[int] = []

    def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [2 * x for x in items]

    batcher = DynamicBatcher(double, max_batch=8, max_wait_s=0.05, max_queue=64)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit_many([i, 100 + i]) for i in range(10)))

    results = asyncio.run(main())
    batcher.close()
    assert results == [[2 * i, 200 + 2 * i] for i in range(10)]
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) < 20


def test_full_queue_refuses_at_once_and_errors_reach_callers() -> None:
    gate = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        gate.wait(10)
        if -1 in items:
            raise ValueError("bad item")
        return items

    batcher = DynamicBatcher(blocked, max_batch=1, max_wait_s=0, max_queue=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(1))  # taken by the worker, which blocks
        while batcher.in_flight == 0 or batcher.depth:
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(batcher.submit_many([2, -1]))  # fills the queue
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="queue is full"):
            await batcher.submit(3)
        gate.set()
        assert await first == 1
        with pytest.raises(ValueError, match="bad item"):
            await queued

    asyncio.run(main())
    batcher.close()


def test_close_drains_then_refuses() -> None:
    done: list[int] = []

    def record(items: list[int]) -> list[int]:
        done.extend(items)
        return items

    batcher = DynamicBatcher(record, max_batch=2, max_wait_s=0.2, max_queue=10)

    async def main() -> None:
        pending = asyncio.ensure_future(batcher.submit_many([1, 2, 3]))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(batcher.close)  # drains: the queued items are computed
        assert await pending == [1, 2, 3]
        with pytest.raises(BatcherClosed):
            await batcher.submit(4)

    asyncio.run(main())
    assert done == [1, 2, 3]
