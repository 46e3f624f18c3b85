"""Request batching: one model thread, continuous batches formed from whatever is waiting.

There is no batching window: when the model thread is free it takes the oldest request and every
waiting request that can share its batch (same steps/guidance/scheduler; total images within
`max_rows`). A lone request therefore never waits for company (batch-1 latency = model time),
and under load batches grow by themselves.

Which requests may share a batch:
- `mixed=True` (cross-brand batching): any brands, up to `max_adapters` distinct adapters (the
  LoRA slots; base-model rows need no slot). Each row is routed to its own slot, and each image's
  noise comes from its own seed, so an image does not depend on its batch companions.
- `mixed=False`: only requests of the oldest request's adapter (group by brand).
Always starting from the oldest request keeps it fair: nothing starves behind a busy brand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from bg_platform.serving import metrics
from bg_platform.serving.errors import Unavailable
from bg_platform.serving.requests import GenerateRequest

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    request: GenerateRequest
    adapter: object | None  # a PreparedAdapter (anything with .key), None = base model
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def adapter_key(self) -> str | None:
        return None if self.adapter is None else self.adapter.key

    @property
    def rows(self) -> int:
        return self.request.rows


def select_batch(pending: Sequence[Job], max_rows: int, max_adapters: int, mixed: bool) -> list[int]:
    """Indices (into `pending`, oldest first) of the jobs that form the next batch."""
    if not pending:
        return []
    head = pending[0]
    chosen, rows = [0], head.rows
    adapters = {head.adapter_key} - {None}
    for i, job in enumerate(pending[1:], start=1):
        if job.request.batch_key != head.request.batch_key or rows + job.rows > max_rows:
            continue
        key = job.adapter_key
        if not mixed and key != head.adapter_key:
            continue
        if key is not None and key not in adapters:
            if len(adapters) >= max_adapters:
                continue
            adapters.add(key)
        chosen.append(i)
        rows += job.rows
    return chosen


class Batcher:
    """Feeds `run(jobs) -> images per job` from one thread (the only thread that touches the model)."""

    def __init__(
        self,
        run: Callable[[list[Job]], list[list]],
        *,
        max_rows: int,
        max_adapters: int,
        mixed: bool,
        max_queue_rows: int,
    ):
        self._run = run
        self.max_rows, self.max_adapters, self.mixed = max_rows, max_adapters, mixed
        self.max_queue_rows = max_queue_rows
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self._thread = threading.Thread(target=self._loop, name="bgp-model", daemon=True)
        self._thread.start()

    def submit(self, request: GenerateRequest, adapter: object | None) -> Future:
        job = Job(request, adapter)
        with self._cond:
            if self._closed:
                raise Unavailable("the service is shutting down; retry on another replica")
            queued = sum(j.rows for j in self._pending)
            if queued and queued + job.rows > self.max_queue_rows:
                raise Unavailable(
                    f"overloaded: {queued} images are waiting (BGP_MAX_QUEUE={self.max_queue_rows}); retry later"
                )
            self._pending.append(job)
            self._cond.notify()
        return job.future

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            idx = select_batch(self._pending, self.max_rows, self.max_adapters, self.mixed)
            jobs = [self._pending[i] for i in idx]
            keep = set(idx)
            self._pending = [j for i, j in enumerate(self._pending) if i not in keep]
        # cancelled jobs (their client timed out) are dropped here, before any model time is spent
        return [j for j in jobs if j.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            if not jobs:
                continue
            start = time.perf_counter()
            for job in jobs:
                metrics.QUEUE_WAIT.observe(start - job.enqueued)
            metrics.BATCH_ROWS.observe(sum(j.rows for j in jobs))
            metrics.BATCH_ADAPTERS.observe(len({j.adapter_key for j in jobs} - {None}))
            try:
                results = self._run(jobs)
                metrics.MODEL_SECONDS.observe(time.perf_counter() - start)
            except Exception as exc:  # delivered to every waiting request; the thread must go on
                log.exception("batch of %d request(s) failed", len(jobs))
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.batches += 1
            for job, images in zip(jobs, results, strict=True):
                job.future.set_result(images)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            self._cond.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Unavailable("the service is shutting down; retry on another replica"))
        self._thread.join(timeout=60)
