"""Adaptive batching of small scoring requests (a dialer or texting tool scores one voter).

Small requests are queued and scored together, one vectorized pass per batch in a worker
thread, so the fixed cost of a pass (building the feature frame, the LightGBM calls) is
paid once per batch instead of once per request. Each request keeps its own ``explain``,
``top_k``, rank and summary, and the model it was read with: requests read under
different models (across a hot swap) are scored apart.

Two ways of forming batches (``PERSUADE_BATCHING``):

``queue`` (default)
    No waiting: when no batch is running the request is scored at once; requests that
    arrive while a batch runs form the next batch. The batch size adapts to the load by
    itself and an idle service adds no latency.
``bentoml``
    BentoML's adaptive-batching dispatcher (the CORK dispatcher behind
    ``@bentoml.api(batchable=True)``), driven directly: ``batchable=True`` itself would turn
    the request body into a list of inputs, and the API's request shape is fixed. It waits
    for more requests based on a latency model it fits online, and refuses (503) requests
    whose estimated latency exceeds ``max_latency_ms``. ``bench/serve_bench.py`` compares both.

A batch that fails is retried request by request, so one bad request fails alone.

Large requests in slices. A large request (:meth:`ScoreBatcher.score_large`) is scored in
slices of voters, one slice per step in a worker thread, sized to take about three small
batches each (:data:`SLICE_PER_SMALL`: every step has a fixed cost, so smaller slices would
mostly repeat it); the slices' responses are merged (:meth:`serving.scoring.SegmentScorer.merge`:
ranks and the summary over the whole request). Steps of large requests take turns (one at a
time per worker, first come first served), while batches of small requests run beside them in
their own thread: a single-voter request never waits for a large request, it shares the CPU
with one slice of it (``bench/load_bench.py`` measured this against small batches waiting for
their turn too: a lower p99 for small requests and twice the throughput of large ones).
:meth:`ScoreBatcher.in_slices` runs any per-slice step this way (``POST /plan`` computes its
expected gains with it: :mod:`serving.plan_api`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from features.settings import BATCHING_STRATEGIES
from serving.voters import VoterBatch

logger = logging.getLogger("persuade.serving")
# A large request's slice is sized to take about SLICE_PER_SMALL times a small batch (a step costs a fixed
# part, the consent ledger's refresh and the frame's set-up, plus a part per voter), at least SLICE_SECONDS;
# LONE_SLICE_SECONDS before any small batch was timed. A small request waits for one slice at most.
SLICE_SECONDS, LONE_SLICE_SECONDS, SLICE_PER_SMALL = 0.02, 0.25, 3.0
FIRST_SLICE, MIN_SLICE, MAX_SLICE = 256, 32, 4_096  # voters per slice: the first, and the bounds
T = TypeVar("T")


class Overloaded(RuntimeError):
    """A request waited longer than the batching latency budget."""


@dataclass(frozen=True)
class ScoreJob:
    """One small request waiting for its batch."""

    served: Any  # model_holder.ServedModel: the model the request was read with
    voters: VoterBatch
    explain: bool
    top_k: int


def score_jobs(jobs: Sequence[ScoreJob]) -> list[dict[str, Any] | Exception]:
    """Each job's response payload (or its exception), scored in one pass per model."""
    out: list[dict[str, Any] | Exception | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(id(job.served), []).append(i)
    for members in groups.values():
        try:
            for i, payload in zip(members, _score_together([jobs[i] for i in members]), strict=True):
                out[i] = payload
        except Exception:  # noqa: BLE001 - isolate the failing request: retry one by one
            for i in members:
                try:
                    out[i] = _score_together([jobs[i]])[0]
                except Exception as exc:  # noqa: BLE001 - returned to that request only
                    out[i] = exc
    return out  # type: ignore[return-value]


def _score_together(jobs: Sequence[ScoreJob]) -> list[dict[str, Any]]:
    scorer = jobs[0].served.scorer
    batch = VoterBatch.concat([job.voters for job in jobs])
    scores = scorer.score(batch, explain=any(j.explain for j in jobs), top_k=max(j.top_k for j in jobs))
    payloads, start = [], 0
    for job in jobs:
        stop = start + len(job.voters)
        payloads.append(scorer.payload(scores.rows(start, stop, job.explain, job.top_k)))
        start = stop
    return payloads


class ScoreBatcher:
    """Queue small requests and score them in adaptive batches.

    Parameters
    ----------
    strategy : {"queue", "bentoml"}
        How batches are formed (see the module docstring).
    max_batch_size : int
        Most requests in one batch.
    max_latency_ms : int
        ``bentoml`` strategy: refuse a request whose estimated wait exceeds this.
    """

    def __init__(self, strategy: str = BATCHING_STRATEGIES[0], max_batch_size: int = 64, max_latency_ms: int = 2_000):
        if strategy not in BATCHING_STRATEGIES:
            raise ValueError(f"batching strategy must be one of {BATCHING_STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.max_batch_size = max_batch_size
        self.max_latency_ms = max_latency_ms
        self._queue: list[tuple[ScoreJob, asyncio.Future]] = []
        self._draining = False
        self.large_steps = asyncio.Lock()  # one step of a large request at a time
        self.slice_voters = FIRST_SLICE  # adapted by _adapt
        self.small_seconds: float | None = None  # running mean of a small batch's step
        self._dispatcher = None
        if strategy == "bentoml":
            from bentoml._internal.marshal.dispatcher import CorkDispatcher

            self._dispatcher = CorkDispatcher(
                max_latency_in_ms=max_latency_ms, max_batch_size=max_batch_size,
                fallback=self._overloaded, get_batch_size=lambda job: 1,
            )
            self._dispatch = self._dispatcher(self._run_batch)

    async def score(self, job: ScoreJob) -> dict[str, Any]:
        """The response payload of ``job``, scored with whatever else is queued."""
        if self._dispatcher is not None:
            result = await self._dispatch(job)
        else:
            future = asyncio.get_running_loop().create_future()
            self._queue.append((job, future))
            if not self._draining:
                self._draining = True
                asyncio.get_running_loop().create_task(self._drain())
            result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch_size]
                del self._queue[: self.max_batch_size]
                try:
                    results = await self._run_batch([job for job, _ in batch])
                except Exception as exc:  # noqa: BLE001 - e.g. the worker thread could not start
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False

    async def _run_batch(self, jobs: Sequence[ScoreJob]) -> list[dict[str, Any] | Exception]:
        def timed() -> tuple[list[dict[str, Any] | Exception], float]:
            started = time.perf_counter()
            return score_jobs(jobs), time.perf_counter() - started

        results, seconds = await anyio.to_thread.run_sync(timed)  # beside large steps, never after them
        self.small_seconds = seconds if self.small_seconds is None else 0.8 * self.small_seconds + 0.2 * seconds
        return results

    async def run(self, step: Callable[..., T], *args: Any) -> T:
        """``step(*args)`` of a large request in a worker thread, in its turn among large requests' steps."""
        async with self.large_steps:
            return await anyio.to_thread.run_sync(step, *args)

    async def score_large(self, served: Any, voters: VoterBatch, explain: bool, top_k: int) -> dict[str, Any]:
        """The response payload of a large request, scored in slices, each in its own turn (see the module
        docstring); ``served`` is the ``model_holder.ServedModel`` the voters were read with."""
        scorer = served.scorer
        parts = await self.in_slices(voters, lambda part: scorer.payload(scorer.score(part, explain, top_k)))
        return await self.run(scorer.merge, parts)

    async def in_slices(self, voters: VoterBatch, step: Callable[[VoterBatch], T], min_voters: int = MIN_SLICE
                        ) -> list[T]:
        """``step`` of each consecutive slice of ``voters`` (at least one slice, empty for no voters), each slice
        a large request's step in its turn (:meth:`run`), sized to the target time (see the module docstring)
        and at least ``min_voters``: a step whose fixed cost is high (``POST /plan``'s) sets its own floor, as
        the size is adapted in proportion to the last step's time, which shrinks toward the floor when the
        fixed cost alone takes longer than the target."""
        parts: list[T] = []
        start = 0

        def timed(part: VoterBatch) -> tuple[T, float]:
            started = time.perf_counter()
            return step(part), time.perf_counter() - started

        while start < len(voters) or not parts:
            part = voters.rows(start, start + max(min_voters, self.slice_voters))
            result, seconds = await self.run(timed, part)
            parts.append(result)
            start += len(part)
            self._adapt(len(part), seconds)
        return parts

    def _adapt(self, voters: int, seconds: float) -> None:
        """Size the next slice to take the target time (see :data:`SLICE_PER_SMALL`) at the last one's pace."""
        target = LONE_SLICE_SECONDS if self.small_seconds is None else \
            max(SLICE_SECONDS, SLICE_PER_SMALL * self.small_seconds)
        self.slice_voters = int(min(MAX_SLICE, max(MIN_SLICE, voters * target / max(seconds, 1e-4))))

    @staticmethod
    def _overloaded() -> dict[str, Any]:
        raise Overloaded("the service is overloaded: the request waited too long in the queue; retry")

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown()
        for _, future in self._queue:
            future.cancel()
