"""Dynamic batching: merge concurrent requests for one model into one predictor call.

Notebook: ``notebooks/07_serving.ipynb``.

Each model version has one :class:`Batcher`. A request hands it its rows and
awaits a future; the batcher's task takes the oldest waiting request, adds
more while they fit into ``max_batch_size`` rows and until ``max_queue_delay``
has passed since it started the batch (or nothing is waiting and the delay is
zero), runs the predictor once in its own thread, and gives every caller
exactly its rows back. While one batch runs, the next one gathers: under load
the batches grow by themselves. A request larger than ``max_batch_size`` runs
as a batch of its own.

One thread a model also makes the predictor thread-safe: LiteRT's interpreter
must never be called from two threads at once.

A batch whose predictor call is known to be shorter than ``inline_below``
(1 ms by default; the estimate is the lowest measured cost per row of the last
32 calls) runs on the event loop itself instead. Handing a call to a
thread and back costs tens of microseconds, and under load far more: the
thread must win the GIL back from a busy event loop, which may hold it for up
to 5 ms (``sys.getswitchinterval()``) before it lets go. A call that short blocks
the loop for less than the hop would; slower models and large batches still
run in the thread, so the loop keeps answering while they compute. Calls never
overlap either way: the batcher runs one batch at a time.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aideploy.errors import ConfigError, ModelNotReadyError


@dataclass(frozen=True)
class BatchStats:
    """What one predictor call did, for metrics.

    Attributes:
        batch_size: Rows in the batch.
        num_requests: Requests merged into it.
        queue_seconds: How long each request waited before the batch started.
        compute_seconds: The predictor call's duration.
    """

    batch_size: int
    num_requests: int
    queue_seconds: tuple[float, ...]
    compute_seconds: float


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future
    enqueued_at: float


class Batcher:
    """Merge concurrent requests into batches for one predictor.

    Introduced in ``07_serving.ipynb``.

    Args:
        predict: The function to call on a batch (``predictor.predict``).
        max_batch_size: Most rows a merged batch holds.
        max_queue_delay: Seconds a batch waits for more requests after its first.
        on_batch: Called on the event loop after each batch with its :class:`BatchStats`.
        name: Used in the worker thread's name.
        inline_below: Seconds: a batch whose estimated predictor call is shorter runs
            on the event loop, not in the thread (0: always in the thread).

    Raises:
        ConfigError: A batch size below 1 or a negative delay.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_queue_delay: float = 0.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "model",
        inline_below: float = 0.001,
    ) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be a whole number of at least 1, got {max_batch_size!r}.")
        if not max_queue_delay >= 0:
            raise ConfigError(f"the queue delay must be 0 or more seconds, got {max_queue_delay!r}.")
        self.predict = predict
        self.inline_below = float(inline_below)
        self.max_batch_size = max_batch_size
        self.max_queue_delay = float(max_queue_delay)
        self.on_batch = on_batch
        self._name = name
        self._items: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = False

    @property
    def predict(self) -> Callable[[np.ndarray], np.ndarray]:
        """The function called on each batch; a new one has no known cost, so it starts in the thread."""
        return self._predict_fn

    @predict.setter
    def predict(self, function: Callable[[np.ndarray], np.ndarray]) -> None:
        self._predict_fn = function
        self._recent_per_row: collections.deque[float] = collections.deque(maxlen=32)

    @property
    def pending(self) -> int:
        """Requests waiting for a batch (not counting the batch that runs)."""
        return len(self._items)

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"batch-{self._name}")
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._name}")

    async def stop(self) -> None:
        """Finish the requests already waiting, then stop the task and its thread."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        await self._task
        self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Queue a request's rows and wait for its outputs.

        Args:
            rows: The request's input, batch axis first.

        Returns:
            The model's output for exactly these rows.

        Raises:
            ModelNotReadyError: The batcher is not running (not started or stopping).
            Exception: Whatever the predictor raised for the batch this request was in.
        """
        if self._task is None or self._stopping:
            raise ModelNotReadyError(f"model {self._name!r} is not accepting requests (the server is stopping).")
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Pending(rows, future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = await self._collect(loop)
            started = time.perf_counter()
            try:
                if self._runs_inline(batch):
                    outputs, compute_seconds = self._predict(batch)
                else:
                    outputs, compute_seconds = await loop.run_in_executor(self._executor, self._predict, batch)
            except Exception as error:  # every caller of the batch learns what went wrong
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            offset = 0
            for item in batch:
                count = len(item.rows)
                if not item.future.done():  # a caller that went away leaves a cancelled future
                    item.future.set_result(outputs[offset : offset + count])
                offset += count
            if self.on_batch is not None:
                self.on_batch(
                    BatchStats(
                        batch_size=offset,
                        num_requests=len(batch),
                        queue_seconds=tuple(started - item.enqueued_at for item in batch),
                        compute_seconds=compute_seconds,
                    )
                )

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        first = self._items.popleft()
        batch, rows = [first], len(first.rows)
        deadline = loop.time() + self.max_queue_delay
        while rows < self.max_batch_size:
            if self._items:
                if rows + len(self._items[0].rows) > self.max_batch_size:
                    break
                item = self._items.popleft()
                batch.append(item)
                rows += len(item.rows)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    def _runs_inline(self, batch: list[_Pending]) -> bool:
        if not self._recent_per_row:  # unknown cost: the thread, until a call was measured
            return False
        # Batches run one at a time, so no call appends to the deque while this reads it.
        return min(self._recent_per_row) * sum(len(item.rows) for item in batch) < self.inline_below

    def _predict(self, batch: list[_Pending]) -> tuple[np.ndarray, float]:
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([item.rows for item in batch])
        started = time.perf_counter()
        outputs = self.predict(rows)
        elapsed = time.perf_counter() - started
        # The estimate is the cheapest of the last calls (per row), not an average: a call
        # that also waited for the GIL (another thread of the server held it when the
        # model returned) is not a slower model, and must not move the batches to the thread.
        self._recent_per_row.append(elapsed / max(len(rows), 1))
        if len(outputs) != len(rows):
            raise RuntimeError(f"the model returned {len(outputs)} rows for a batch of {len(rows)}.")
        return outputs, elapsed
