"""The local stand-in for Cloud Tasks: leases due messages from a pull queue and delivers them.

``relay dev`` and the benchmarks have no push queue, so this loop plays its part: it keeps
up to ``concurrency`` deliveries in flight, acknowledges what the worker finished,
gives back what it asked to see again later, and retries failed deliveries with
exponential backoff. How a message reaches a worker (``HttpDelivery``,
``InProcessDelivery``, re-exported here) and what each outcome means live in
``infra/local/runtime/delivery.py``.

Every SQLite call runs on one dedicated thread so the event loop never blocks on the
database, and acknowledgements are batched: each lease and ack is a transaction, and
batching them is what keeps the queue's cost per transition small beside the engine's
two durable commits (claim and commit)::

    lease_due(limit=free slots) ──> deliver ──> done ─────────> ack   (batched)
                                          ├──> retry later ──> release(delay asked for)
                                          ├──> failed ───────> release(backoff by count)
                                          └──> rejected ─────> ack + error log (poison)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from core.domain.records import Message
from core.errors import InfrastructureError
from core.faults import FaultKind, FaultPlan
from core.ports.task_queue import Delivery, PullQueue
from infra.local.runtime.delivery import (
    DEFAULT_DISPATCH_DEADLINE_SECONDS,
    DeliveryOutcome,
    DeliveryTransport,
    HttpDelivery,
    InProcessDelivery,
    OutcomeKind,
    backoff_seconds,
)

# The transports too, where callers (the dev stack, benchmarks) have always imported them.
__all__ = ["Dispatcher", "DispatcherStats", "HttpDelivery", "InProcessDelivery"]

log = logging.getLogger("relay.dispatcher")

_QUEUE_ERROR_PAUSE_SECONDS: Final = 0.5
_FLUSH_RETRY_LIMIT: Final = 100


@dataclass(frozen=True, slots=True)
class DispatcherStats:
    """Counters since the dispatcher was built, for progress displays and tests.

    ``delivered`` counts finished delivery attempts, duplicates included; ``errors``
    counts failed and rejected ones; ``acked`` and ``released`` count queue operations
    that committed.
    """

    delivered: int
    acked: int
    released: int
    errors: int
    rejected: int
    duplicates: int
    in_flight: int


@dataclass
class _CycleResult:
    leased: list[Delivery]
    pending: int | None
    failed_acks: list[str]
    failed_releases: list[tuple[str, float]]
    is_lease_failed: bool


class Dispatcher:
    """Delivers due messages of a ``PullQueue`` through a ``DeliveryTransport``.

    Args:
        queue: Where messages wait; its lease/ack/release calls block, so they run on a
            dedicated thread.
        delivery: How messages reach a worker.
        concurrency: Most deliveries in flight at once.
        faults: ``duplicate`` rules deliver a message twice concurrently; a rule
            matches on the message's saga, step and action (a format-1 message, which
            names no saga, only matches rules for any saga).
        dispatch_deadline_seconds: Longest a delivery is expected to take; a message is
            leased for this plus ``lease_margin_seconds`` so that only a dispatcher that
            died (not a slow worker) lets it come back by lease expiry.
        lease_margin_seconds: See ``dispatch_deadline_seconds``.
        ack_batch_size: Acknowledge as soon as this many receipts wait.
        ack_interval_seconds: Longest a receipt waits to be acknowledged.
        min_idle_sleep_seconds: First pause when nothing was due; doubles while idle.
        max_idle_sleep_seconds: Longest pause between polls of an idle queue.
        clock: Epoch seconds, passed to ``lease_due`` (tests use a fixed clock).
        rng: Randomness of backoff jitter and duplicate faults (seeded in tests).
    """

    def __init__(
        self,
        queue: PullQueue,
        delivery: DeliveryTransport,
        *,
        concurrency: int = 32,
        faults: FaultPlan | None = None,
        dispatch_deadline_seconds: float = DEFAULT_DISPATCH_DEADLINE_SECONDS,
        lease_margin_seconds: float = 30.0,
        ack_batch_size: int = 32,
        ack_interval_seconds: float = 0.005,
        min_idle_sleep_seconds: float = 0.005,
        max_idle_sleep_seconds: float = 0.02,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._queue = queue
        self._delivery = delivery
        self._concurrency = concurrency
        self._duplicate_rules = [
            rule for rule in (faults.rules if faults else ()) if rule.kind is FaultKind.DUPLICATE
        ]
        self._lease_seconds = dispatch_deadline_seconds + lease_margin_seconds
        self._ack_batch_size = ack_batch_size
        self._ack_interval_seconds = ack_interval_seconds
        self._min_idle_sleep_seconds = min_idle_sleep_seconds
        self._max_idle_sleep_seconds = max_idle_sleep_seconds
        self._clock = clock
        self._rng = rng or random.Random(faults.seed if faults else None)
        # Receipts waiting to be acknowledged, and (receipt, delay) waiting to be released.
        self._acks: list[str] = []
        self._acks_since = 0.0
        self._releases: list[tuple[str, float]] = []
        # Deliveries in flight by receipt, duplicates included (they use a slot too).
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._in_flight_count = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._waker: asyncio.Future[None] | None = None
        self._is_woken = False
        self._is_stopping = False
        self._pump: asyncio.Task[None] | None = None
        self._db_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._delivered = 0
        self._acked = 0
        self._released = 0
        self._errors = 0
        self._rejected = 0
        self._duplicates = 0

    # -- public --------------------------------------------------------------------

    @property
    def stats(self) -> DispatcherStats:
        """A snapshot of the counters."""
        return DispatcherStats(
            delivered=self._delivered,
            acked=self._acked,
            released=self._released,
            errors=self._errors,
            rejected=self._rejected,
            duplicates=self._duplicates,
            in_flight=self._in_flight_count,
        )

    @property
    def is_running(self) -> bool:
        """True between ``start`` and the end of ``stop``."""
        return self._pump is not None

    @property
    def delivery(self) -> DeliveryTransport:
        """The transport messages go through."""
        return self._delivery

    async def start(self) -> None:
        """Start delivering in the background on the running event loop."""
        if self._pump is not None:
            return
        self._is_stopping = False
        self._db_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="relay-dispatch-db"
        )
        self._pump = asyncio.get_running_loop().create_task(self._run(), name="relay-dispatcher")

    async def stop(self, *, timeout_seconds: float = 30.0) -> None:
        """Stop leasing, let in-flight deliveries finish, and flush acks and releases.

        Deliveries still running after ``timeout_seconds`` are given back to the queue
        for immediate redelivery; the step's lease in the state store keeps a second
        worker off it while the first may still be running.
        """
        pump = self._pump
        if pump is None:
            return
        self._is_stopping = True
        self._wake()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_seconds)
        for receipt in list(self._in_flight):
            self._releases.append((receipt, 0.0))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._flush_all()
        assert self._db_thread is not None
        self._db_thread.shutdown(wait=True)
        self._db_thread = None
        self._pump = None
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("dispatcher stopped before the queue drained"))

    async def aclose(self) -> None:
        """Stop (gracefully) and close the transport."""
        await self.stop()
        await self._delivery.aclose()

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run_until_idle(self, *, timeout_seconds: float | None = None) -> None:
        """Deliver until the queue is empty and nothing is in flight.

        Starts the dispatcher if needed and stops it again afterwards in that case.

        Raises:
            TimeoutError: the queue did not drain in ``timeout_seconds``.
        """
        was_running = self.is_running
        if not was_running:
            await self.start()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        self._wake()
        try:
            await asyncio.wait_for(waiter, timeout_seconds)
        except TimeoutError:
            raise TimeoutError(
                f"queue did not drain within {timeout_seconds:g}s ({self.stats})"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._idle_waiters.remove(waiter)
            if not was_running:
                await self.stop()

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        idle_sleep = self._min_idle_sleep_seconds
        while not self._is_stopping:
            try:
                result = await self._cycle()
            except Exception:
                log.exception("dispatcher cycle failed; pausing before the next poll")
                await self._sleep(_QUEUE_ERROR_PAUSE_SECONDS)
                continue
            if result.is_lease_failed:
                await self._sleep(_QUEUE_ERROR_PAUSE_SECONDS)
                continue
            if result.pending == 0 and self._in_flight_count == 0 and not self._acks:
                for waiter in self._idle_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if result.leased:
                idle_sleep = self._min_idle_sleep_seconds
                for item in result.leased:
                    self._launch(item)
                # Let the deliveries just started reach their threads before polling again.
                await asyncio.sleep(0)
                continue
            if self._in_flight_count >= self._concurrency:
                await self._sleep(self._ack_wait(default=1.0))
                continue
            await self._sleep(self._ack_wait(default=idle_sleep))
            idle_sleep = min(idle_sleep * 2, self._max_idle_sleep_seconds)

    async def _cycle(self) -> _CycleResult:
        """Run one round of queue calls on the database thread: ack, release, lease."""
        acks: list[str] = []
        if self._acks and (
            len(self._acks) >= self._ack_batch_size
            or self._in_flight_count == 0
            or time.monotonic() - self._acks_since >= self._ack_interval_seconds
        ):
            acks, self._acks = self._acks, []
        releases, self._releases = self._releases, []
        free = self._concurrency - self._in_flight_count
        limit = free if free > 0 and self._delivery.is_available else 0
        check_pending = bool(self._idle_waiters) and self._in_flight_count == 0 and not self._acks
        assert self._db_thread is not None
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._db_thread, self._queue_calls, acks, releases, limit, check_pending
        )
        self._requeue_failed(result)
        return result

    def _queue_calls(
        self, acks: list[str], releases: list[tuple[str, float]], limit: int, check_pending: bool
    ) -> _CycleResult:
        """The blocking part of a cycle; runs on the database thread only."""
        result = _CycleResult([], None, [], [], is_lease_failed=False)
        if acks:
            try:
                self._queue.ack(receipts=acks)
                self._acked += len(acks)
            except InfrastructureError as exc:
                log.warning("ack of %d message(s) failed, will retry: %s", len(acks), exc)
                result.failed_acks = acks
        for receipt, delay in releases:
            try:
                self._queue.release(receipt=receipt, delay_seconds=delay)
                self._released += 1
            except InfrastructureError as exc:
                log.warning("release of %s failed, will retry: %s", receipt, exc)
                result.failed_releases.append((receipt, delay))
        if limit > 0:
            try:
                result.leased = self._queue.lease_due(
                    now=self._clock(), limit=limit, lease_seconds=self._lease_seconds
                )
            except InfrastructureError as exc:
                log.warning("leasing due messages failed: %s", exc)
                result.is_lease_failed = True
        if check_pending and not result.leased and not result.failed_acks:
            with contextlib.suppress(InfrastructureError):
                result.pending = self._queue.pending_count()
        return result

    def _requeue_failed(self, result: _CycleResult) -> None:
        if result.failed_acks:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks[:0] = result.failed_acks
        self._releases[:0] = result.failed_releases

    def _ack_wait(self, *, default: float) -> float:
        """How long the loop may sleep before waiting acks are due."""
        if not self._acks:
            return default
        due_in = self._acks_since + self._ack_interval_seconds - time.monotonic()
        return max(0.0, min(default, due_in))

    # -- deliveries ----------------------------------------------------------------

    def _launch(self, item: Delivery) -> None:
        duplicate: asyncio.Task[DeliveryOutcome] | None = None
        if self._is_duplicate(item.message):
            self._duplicates += 1
            log.warning("RELAY_FAULTS: delivering %s twice", item.message.message_id)
            duplicate = asyncio.create_task(self._deliver_once(item.message))
            self._track(duplicate)
        task = asyncio.create_task(self._deliver(item, duplicate))
        self._in_flight[item.receipt] = task
        self._track(task)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._in_flight_count += 1
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._in_flight_count -= 1
        self._tasks.discard(task)
        self._wake()

    def _is_duplicate(self, message: Message) -> bool:
        saga = message.saga or ""  # no saga (format 1): only rules for any saga ("*") match
        step, action = message.step, message.action.value
        return any(
            rule.matches(saga=saga, step=step, action=action)
            and self._rng.random() < rule.probability
            for rule in self._duplicate_rules
        )

    async def _deliver_once(self, message: Message) -> DeliveryOutcome:
        try:
            outcome = await self._delivery.deliver(message)
        except Exception as exc:
            log.exception("delivery transport raised for %s", message.message_id)
            outcome = DeliveryOutcome(OutcomeKind.FAILED, f"{type(exc).__name__}: {exc}")
        self._delivered += 1
        return outcome

    async def _deliver(
        self, item: Delivery, duplicate: asyncio.Task[DeliveryOutcome] | None
    ) -> None:
        try:
            outcome = await self._deliver_once(item.message)
            if duplicate is not None and outcome.kind is not OutcomeKind.DONE:
                # The duplicate may have won the claim and finished the step; then the
                # message is done, and releasing it would only hold it for a lease.
                other = await duplicate
                if other.kind is OutcomeKind.DONE:
                    outcome = other
        finally:
            self._in_flight.pop(item.receipt, None)
        self._settle(item, outcome)

    def _settle(self, item: Delivery, outcome: DeliveryOutcome) -> None:
        message_id = item.message.message_id
        if outcome.kind is OutcomeKind.DONE:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(item.receipt)
        elif outcome.kind is OutcomeKind.RETRY_LATER:
            self._releases.append((item.receipt, outcome.retry_after_seconds))
        elif outcome.kind is OutcomeKind.REJECTED:
            self._errors += 1
            self._rejected += 1
            log.error("worker rejected message %s; dropping it: %s", message_id, outcome.detail)
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(item.receipt)
        else:
            self._errors += 1
            delay = backoff_seconds(item.delivery_count, self._rng)
            log.warning(
                "delivery %d of %s failed; retrying in %.2fs: %s",
                item.delivery_count,
                message_id,
                delay,
                outcome.detail,
            )
            self._releases.append((item.receipt, delay))

    # -- waiting -------------------------------------------------------------------

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)
        else:
            self._is_woken = True

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early when a delivery finishes or stop()."""
        if self._is_woken or self._is_stopping:
            self._is_woken = False
            return
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        self._waker = waker
        timer = loop.call_later(seconds, _resolve, waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None
            self._is_woken = False

    async def _flush_all(self) -> None:
        """Commit every waiting ack and release (shutdown), retrying transient failures."""
        assert self._db_thread is not None
        loop = asyncio.get_running_loop()
        for _ in range(_FLUSH_RETRY_LIMIT):
            if not self._acks and not self._releases:
                return
            acks, self._acks = self._acks, []
            releases, self._releases = self._releases, []
            result = await loop.run_in_executor(
                self._db_thread, self._queue_calls, acks, releases, 0, False
            )
            self._requeue_failed(result)
            if result.failed_acks or result.failed_releases:
                await asyncio.sleep(0.05)
        log.error(
            "could not flush %d ack(s) and %d release(s); those messages will be "
            "delivered again when their leases expire",
            len(self._acks),
            len(self._releases),
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
