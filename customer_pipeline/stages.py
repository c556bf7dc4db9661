"""The async stages: fetch -> validate and score -> enrich -> dedup (sorted spool).

Each stage is a task reading one bounded memory object stream and writing the next; closing a
send side ends the stage after it, the bounded buffers give backpressure, and an exception in
one stage cancels the task group. Records cross stage boundaries a page at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._streams import items, put
from .checkpoint import Checkpoint
from .client import ReqresClient
from .dedup import SortedSpool, summary_code
from .paging import Page, PageSummary, StopSignal
from .rules import Rejected, enrich, validate_and_score
from .writer import RejectedWriter

log = logging.getLogger("customer_pipeline.stages")
PROGRESS_LOG_EVERY_S = 2.0


@dataclass(slots=True)
class Batch:
    """The customers of one page, with their positions in it."""

    page: int
    customers: list[tuple[int, dict[str, Any]]]


@dataclass
class Progress:
    """A snapshot for progress displays."""

    pages_done: int
    pages_total: int | None
    records: int
    retries: int
    rate_limited: int
    failed_pages: int


@dataclass
class StageCounters:
    """What the stages saw, and their seconds: fetch is wall time from the first request to
    the last page; the others count only time spent working (waits on streams excluded)."""

    raw_records: int = 0
    rejected: int = 0
    replayed_pages: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"fetch": 0.0, "validate": 0.0, "enrich": 0.0, "dedup": 0.0}
    )


ProgressCallback = Callable[[Progress], None]


async def fetch_stage(
    client: ReqresClient,
    send: MemoryObjectSendStream[Page],
    counters: StageCounters,
    on_progress: ProgressCallback | None = None,
    checkpoint: Checkpoint | None = None,
    stop: StopSignal | None = None,
) -> None:
    """Pages recorded by an earlier attempt first, then the rest from the API as they arrive.

    Each fetched page is recorded in the checkpoint before it moves on; a checkpoint of a
    complete run is only replayed.
    """
    started = time.perf_counter()
    progress = _ProgressLog(client, counters, on_progress)
    done: dict[int, PageSummary] = {}
    async with send:
        if checkpoint is not None and checkpoint.resumed:
            for page in checkpoint.replay(client.settings.per_page):
                # What each page held, not its records: the resumed walk ends where the
                # first one did, and memory stays small.
                done[page.number] = PageSummary(not page.records, page.total_pages)
                counters.replayed_pages += 1
                counters.raw_records += len(page.records)
                progress.page_done()
                await put(send, page)
        if checkpoint is not None and checkpoint.complete:  # a finished run: nothing to fetch
            client.total_pages = checkpoint.total_pages
        else:
            async for page in client.iter_pages(skip=done, stop=stop):
                if checkpoint is not None:
                    checkpoint.record(page)
                counters.raw_records += len(page.records)
                progress.page_done()
                await put(send, page)
    counters.seconds["fetch"] = time.perf_counter() - started


class _ProgressLog:
    """Progress to a callback after every page, and to the log every few seconds."""

    def __init__(
        self, client: ReqresClient, counters: StageCounters, callback: ProgressCallback | None
    ) -> None:
        self.client = client
        self.counters = counters
        self.callback = callback
        self.pages = 0
        self.last_log = time.perf_counter()

    def page_done(self) -> None:
        self.pages += 1
        client = self.client
        snapshot = Progress(
            self.pages,
            client.total_pages,
            self.counters.raw_records,
            client.stats.retries,
            client.stats.rate_limited,
            len(client.failed_pages),
        )
        if self.callback is not None:
            self.callback(snapshot)
        now = time.perf_counter()
        if now - self.last_log >= PROGRESS_LOG_EVERY_S:
            self.last_log = now
            log.info(
                "progress: %d/%s pages, %d records, %d retries, %d failed pages",
                snapshot.pages_done,
                snapshot.pages_total if snapshot.pages_total is not None else "?",
                snapshot.records,
                snapshot.retries,
                snapshot.failed_pages,
            )


def score_page(page: Page, rejected: RejectedWriter) -> Batch:
    """Validate and score one page's records; the unusable ones go to ``rejected``."""
    customers: list[tuple[int, dict[str, Any]]] = []
    as_sent: list[Any] | None = None
    for position, raw in enumerate(page.records):
        try:
            customers.append((position, validate_and_score(raw)))
        except Rejected as exc:
            reason = exc.reason
            if _maybe_wide_id(raw):
                if as_sent is None:
                    as_sent = _records_as_sent(page)
                if position < len(as_sent):
                    raw = as_sent[position]
                    reason = _reason(raw, reason)
            rejected.write(page.number, position, reason, raw)
    return Batch(page.number, customers)


def _maybe_wide_id(raw: Any) -> bool:
    """orjson reads an integer wider than 64 bits as a float: 10**29 arrives as 1e+29."""
    if not isinstance(raw, dict):
        return False
    value = raw.get("id")
    return isinstance(value, float) and value.is_integer() and abs(value) >= 2**63


def _records_as_sent(page: Page) -> list[Any]:
    """The page's records read again by the stdlib, which keeps wide integers whole.

    Only for a page with a rejected float id, so the hot path never pays for it; if even
    that reading fails, the records stay as orjson read them.
    """
    try:
        doc = json.loads(page.body)
    except (ValueError, RecursionError):
        return page.records
    records = doc.get("data") if isinstance(doc, dict) else None
    return records if isinstance(records, list) else page.records


def _reason(raw: Any, fallback: str) -> str:
    """Why ``raw`` (as the stdlib read it) is rejected."""
    try:
        validate_and_score(raw)
    except Rejected as exc:
        return exc.reason
    return fallback


async def validate_stage(
    receive: MemoryObjectReceiveStream[Page],
    send: MemoryObjectSendStream[Batch],
    rejected: RejectedWriter,
    counters: StageCounters,
) -> None:
    """Validate and score, a page at a time."""
    async with receive, send:
        async for page in items(receive):
            started = time.perf_counter()
            batch = score_page(page, rejected)
            counters.seconds["validate"] += time.perf_counter() - started
            await put(send, batch)
    counters.rejected = rejected.count


async def enrich_stage(
    receive: MemoryObjectReceiveStream[Batch],
    send: MemoryObjectSendStream[Batch],
    seed: int,
    counters: StageCounters,
) -> None:
    """Add the deterministic business fields."""
    async with receive, send:
        async for batch in items(receive):
            started = time.perf_counter()
            for _, customer in batch.customers:
                enrich(customer, seed)
            counters.seconds["enrich"] += time.perf_counter() - started
            await put(send, batch)


async def dedup_stage(
    receive: MemoryObjectReceiveStream[Batch],
    spool: SortedSpool,
    counters: StageCounters,
) -> None:
    """Serialize every customer into the sorted spool, which keeps the best copy per id."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    add = spool.add
    async with receive:
        async for batch in items(receive):
            started = time.perf_counter()
            page = batch.page
            for position, customer in batch.customers:
                add(
                    customer["customer_id"],
                    customer["data_quality_score"],
                    page,
                    position,
                    summary_code(customer),
                    dumps(customer, option=newline),
                )
            counters.seconds["dedup"] += time.perf_counter() - started
