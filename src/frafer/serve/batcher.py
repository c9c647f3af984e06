"""Micro-batching: requests that arrive together are run as one batch, so throughput grows with load.

Each request puts one item on a bounded queue and awaits its future. One worker task takes the first waiting item,
keeps collecting until `max_batch` items or `max_wait_ms` have passed, and runs the whole batch in a single worker
thread (the model is used by that thread alone). A full queue refuses at once (`Busy`, answered 503) instead of
growing without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class Busy(Exception):
    """The queue is full: the service is at capacity."""


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list], list], max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 64) -> None:
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.max_queue = max_queue
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # batches run, and items in them: the metrics report their ratio
        self.items = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frafer-batch")
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    def full(self) -> bool:
        """No room in the queue now: callers can refuse before doing any work for the request."""
        return self.queue is not None and self.queue.full()

    def pending(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    async def submit(self, item):
        """Run `item` in the next batch and return its result; raises Busy when the queue is full."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Busy() from None
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            live = [(item, future) for item, future in batch if not future.done()]  # timed-out callers are gone
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [item for item, _ in live])
            except Exception as err:  # noqa: BLE001 - handed to every caller, who answers with a JSON error
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.batches += 1
            self.items += len(live)
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
