"""The async stages: fetch -> validate and score -> enrich -> dedup (sorted spool).

Each stage is a task reading one bounded memory object stream and writing the next; closing a
send side ends the stage after it, the bounded buffers give backpressure, and an exception in
one stage cancels the task group. Records cross stage boundaries a page at a time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._streams import items, put
from .checkpoint import Checkpoint
from .dedup import SortedSpool, summary_code
from .observe import Bus, PageDone, Progress, ProgressCallback, RecordRejected, StageTimed
from .rules import Rejected, enrich, validate_and_score
from .sources import Page, Recorded, Records, Source, StopSignal
from .writer import RejectedWriter

__all__ = [
    "Batch",
    "Progress",
    "ProgressCallback",
    "StageCounters",
    "dedup_stage",
    "enrich_stage",
    "fetch_stage",
    "score_page",
    "validate_stage",
]


@dataclass(slots=True)
class Batch:
    """The customers of one page, with their positions in it."""

    page: int
    customers: list[tuple[int, dict[str, Any]]]


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


async def fetch_stage(
    source: Source,
    send: MemoryObjectSendStream[Page],
    counters: StageCounters,
    bus: Bus,
    checkpoint: Checkpoint | None = None,
    stop: StopSignal | None = None,
) -> None:
    """Pages recorded by an earlier attempt first, then the rest from the API as they arrive.

    Each fetched page is recorded in the checkpoint before it moves on; a checkpoint of a
    complete run is only replayed.
    """
    started = time.perf_counter()
    recorded = Recorded()
    emit = bus.emit
    async with send:
        if checkpoint is not None and checkpoint.resumed:
            for page in checkpoint.replay(source.reread):
                # What each page held, not its records: the resumed walk ends where the
                # first one did, and memory stays small.
                recorded.add(page)
                counters.replayed_pages += 1
                counters.raw_records += len(page.records)
                emit(PageDone(page.number, len(page.records), True))
                await put(send, page)
            if checkpoint.complete:  # a finished run: nothing to fetch
                recorded.finish(checkpoint.total_pages)
        async with contextlib.aclosing(source.pages(recorded=recorded, stop=stop)) as pages:
            async for page in pages:
                if checkpoint is not None:
                    checkpoint.record(page)
                counters.raw_records += len(page.records)
                emit(PageDone(page.number, len(page.records), False))
                await put(send, page)
    counters.seconds["fetch"] = time.perf_counter() - started
    emit(StageTimed("fetch", counters.seconds["fetch"]))


def score_page(
    page: Page,
    rejected: RejectedWriter,
    records: Records,
    bus: Bus | None = None,
) -> Batch:
    """Validate and score one page's records; the unusable ones go to ``rejected`` as sent."""
    shape = records.shape
    customers: list[tuple[int, dict[str, Any]]] = []
    as_sent: list[Any] | None = None
    for position, raw in enumerate(page.records):
        try:
            customers.append((position, validate_and_score(raw if shape is None else shape(raw))))
        except Rejected as exc:
            reason = exc.reason
            if _maybe_wide_id(raw if shape is None else shape(raw)):
                if as_sent is None:
                    as_sent = records.as_sent(page.body, page.records)
                if position < len(as_sent):
                    raw = as_sent[position]
                    reason = _reason(raw if shape is None else shape(raw), reason)
            rejected.write(page.number, position, reason, raw)
            if bus is not None:
                bus.emit(RecordRejected(page.number, position, reason))
    return Batch(page.number, customers)


def _maybe_wide_id(raw: Any) -> bool:
    """orjson reads an integer wider than 64 bits as a float: 10**29 arrives as 1e+29."""
    if not isinstance(raw, dict):
        return False
    value = raw.get("id")
    return isinstance(value, float) and value.is_integer() and abs(value) >= 2**63


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
    records: Records,
    bus: Bus | None = None,
) -> None:
    """Validate and score, a page at a time."""
    async with receive, send:
        async for page in items(receive):
            started = time.perf_counter()
            batch = score_page(page, rejected, records, bus)
            counters.seconds["validate"] += time.perf_counter() - started
            await put(send, batch)
    counters.rejected = rejected.count
    if bus is not None:
        bus.emit(StageTimed("validate", counters.seconds["validate"]))


async def enrich_stage(
    receive: MemoryObjectReceiveStream[Batch],
    send: MemoryObjectSendStream[Batch],
    seed: int,
    counters: StageCounters,
    bus: Bus | None = None,
) -> None:
    """Add the deterministic business fields."""
    async with receive, send:
        async for batch in items(receive):
            started = time.perf_counter()
            for _, customer in batch.customers:
                enrich(customer, seed)
            counters.seconds["enrich"] += time.perf_counter() - started
            await put(send, batch)
    if bus is not None:
        bus.emit(StageTimed("enrich", counters.seconds["enrich"]))


async def dedup_stage(
    receive: MemoryObjectReceiveStream[Batch],
    spool: SortedSpool,
    counters: StageCounters,
    bus: Bus | None = None,
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
    if bus is not None:
        bus.emit(StageTimed("dedup", counters.seconds["dedup"]))
