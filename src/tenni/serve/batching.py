"""Dynamic batching: concurrent requests for one model are gathered for a few milliseconds and run as one call.

Encoding 16 texts at once costs little more than encoding one, so under load, gathering requests raises
throughput; alone, a request waits at most ``wait_s``. The model runs in one thread per model (the event loop
stays free to read and answer other requests), and each request gets its own slice of the results, in order.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor


class Batcher:
    """Gathers ``submit(items)`` calls until ``max_batch`` items or ``wait_s`` seconds, then runs ``fn`` once.

    ``fn(list_of_items) -> sequence of results, one per item`` is a plain (blocking) function. When one gathered
    call fails, each request of the batch is retried alone, so one request's failure is not another's.
    """

    def __init__(self, fn, *, max_batch: int = 64, wait_s: float = 0.005, name: str = "model"):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, float(wait_s))
        self.name = name
        self.calls = 0  # how many times fn ran (what the tests count)
        self._pending: collections.deque = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tenni-serve-{name}"[:32])

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"tenni-batcher-{self.name}")

    async def submit(self, items: list) -> list:
        if self._task is None or self._closing:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Finish what was submitted, then stop."""
        self._closing = True
        if self._task is not None:
            self._arrived.set()
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch, count = [], 0
            deadline = loop.time() + self.wait_s
            while True:
                while self._pending and count < self.max_batch:
                    items, future = self._pending.popleft()
                    batch.append((items, future))
                    count += len(items)
                remaining = deadline - loop.time()
                if count >= self.max_batch or remaining <= 0 or self._closing:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            await self._run(batch)

    async def _run(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        inputs = [x for items, _ in batch for x in items]
        try:
            self.calls += 1
            results = await loop.run_in_executor(self._executor, self.fn, inputs)
            if len(results) != len(inputs):
                raise RuntimeError(f"the model returned {len(results)} results for {len(inputs)} inputs")
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0][1], error=err)
                return
            for items, future in batch:  # isolate the request that fails
                try:
                    self.calls += 1
                    _settle(future, result=await loop.run_in_executor(self._executor, self.fn, items))
                except Exception as one:
                    _settle(future, error=one)
            return
        start = 0
        for items, future in batch:
            _settle(future, result=results[start:start + len(items)])
            start += len(items)


def _settle(future: asyncio.Future, *, result=None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
