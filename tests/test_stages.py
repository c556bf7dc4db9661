"""The stages one by one, joined by memory object streams: what each sends on, and its end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from customer_pipeline.checkpoint import Checkpoint
from customer_pipeline.dedup import SortedSpool, summary_code
from customer_pipeline.observe import Bus, PageDone, RecordRejected, StageTimed
from customer_pipeline.rules import RULES, validate_and_score
from customer_pipeline.sources import FieldMap, Page, Recorded, Records
from customer_pipeline.sources.body import BodyReader
from customer_pipeline.stages import (
    Batch,
    StageCounters,
    dedup_stage,
    enrich_stage,
    fetch_stage,
    validate_stage,
)
from customer_pipeline.writer import RejectedWriter

from .conftest import fast_settings

BUSINESS = RULES.table.business_names


def user(i: int, **fields: Any) -> dict[str, Any]:
    record = {"id": i, "email": f"u{i}@x.io", "first_name": "Ann", "last_name": "Lee",
              "avatar": f"https://x.io/{i}.png"}  # fmt: skip
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def page(number: int, records: list[Any], total_pages: int | None = 3) -> Page:
    return Page(number, records, total_pages, orjson.dumps({"data": records}))


def records_reader(**settings: Any) -> Records:
    shape = settings.pop("shape", None)
    return Records(BodyReader(fast_settings(**settings)), shape)


class Events:
    """Every event of the given types a bus carries, in order."""

    def __init__(self, bus: Bus, *types: type[Any]) -> None:
        self.seen: list[Any] = []
        for kind in types:
            bus.subscribe(kind, self.seen.append)


async def drained(receive: Any) -> list[Any]:
    """What a stage sent, read until its send side closes (a stage that never closes fails)."""
    with anyio.fail_after(5):
        return [item async for item in receive]


async def validated(
    pages: list[Page], rejected: RejectedWriter, records: Records, bus: Bus | None = None
) -> tuple[list[Batch], StageCounters]:
    """Run validate_stage over ``pages`` (their stream closed after the last) to its end."""
    pages_tx, pages_rx = anyio.create_memory_object_stream[Page](len(pages))
    out_tx, out_rx = anyio.create_memory_object_stream[Batch](len(pages))
    for p in pages:
        pages_tx.send_nowait(p)
    pages_tx.close()
    counters = StageCounters()
    with anyio.fail_after(5):
        await validate_stage(pages_rx, out_tx, rejected, counters, records, bus)
    return await drained(out_rx), counters


def rejects(writer: RejectedWriter) -> list[Any]:
    path = writer.commit()
    return [] if path is None else [json.loads(line) for line in path.read_text().splitlines()]


# -- validate ---------------------------------------------------------------------------------


async def test_validate_scores_customers_and_sends_rejects_with_their_page_and_position(
    tmp_path: Path,
) -> None:
    writer = RejectedWriter(tmp_path / "rejected.jsonl")
    bus = Bus()
    events = Events(bus, RecordRejected, StageTimed)
    sent = [user(1), "not an object", {"id": "x1"}, user(2, email=None)]
    pages = [page(3, sent), page(4, [])]
    batches, counters = await validated(pages, writer, records_reader(), bus)
    assert [b.page for b in batches] == [3, 4] and batches[1].customers == []
    (first, one), (fourth, two) = batches[0].customers
    assert (first, one) == (0, validate_and_score(user(1)))
    assert fourth == 3 and two["customer_id"] == 2
    assert (two["data_quality_score"], two["quality_issues"]) == (90, ["email:missing"])
    assert all(one[name] is None for name in BUSINESS)  # enrich's job, not validate's
    assert rejects(writer) == [
        {"page": 3, "position": 1, "reason": "record is not a JSON object",
         "record": "not an object"},
        {"page": 3, "position": 2, "reason": "id is not an integer", "record": {"id": "x1"}},
    ]  # fmt: skip
    assert counters.rejected == 2
    assert events.seen[:2] == [RecordRejected(3, 1, "record is not a JSON object"),
                               RecordRejected(3, 2, "id is not an integer")]  # fmt: skip
    assert [type(e) for e in events.seen] == [RecordRejected, RecordRejected, StageTimed]
    assert events.seen[-1].stage == "validate"


async def test_validate_reads_fields_through_the_map_and_rejects_records_as_sent(
    tmp_path: Path,
) -> None:
    writer = RejectedWriter(tmp_path / "rejected.jsonl")
    shape = FieldMap({"id": "uid", "email": "contact.email"})
    nested = [{"uid": "7", "contact": {"email": "A@B.io"}}, {"id": 8, "contact": {}}]
    [batch], _ = await validated([page(1, nested)], writer, records_reader(shape=shape))
    [(position, customer)] = batch.customers
    assert position == 0 and customer["customer_id"] == 7
    assert customer["email"] == "A@B.io" and customer["email_domain"] == "b.io"
    assert rejects(writer) == [
        {"page": 1, "position": 1, "reason": "id missing", "record": {"id": 8, "contact": {}}}
    ]


async def test_validate_writes_an_id_wider_than_64_bits_whole_as_the_api_sent_it(
    tmp_path: Path,
) -> None:
    huge = 10**29
    body = b'{"data": [{"id": 1, "email": "a@b.io"}, {"id": %d, "email": "c@d.io"}]}' % huge
    reader = records_reader()
    _, records = reader.body.parse(body, "http://api.test/api/users?page=2")
    assert records[1]["id"] == float(huge)  # what orjson makes of it
    writer = RejectedWriter(tmp_path / "rejected.jsonl")
    [batch], _ = await validated([Page(2, records, 2, body)], writer, reader)
    assert [p for p, _ in batch.customers] == [0]
    assert rejects(writer) == [
        {"page": 2, "position": 1, "reason": f"id {huge} is larger than 2**63-1",
         "record": {"id": huge, "email": "c@d.io"}},
    ]  # fmt: skip


# -- enrich -----------------------------------------------------------------------------------


async def enriched(batches: list[Batch], seed: int, bus: Bus | None = None) -> list[Batch]:
    tx, rx = anyio.create_memory_object_stream[Batch](len(batches))
    out_tx, out_rx = anyio.create_memory_object_stream[Batch](len(batches))
    for b in batches:
        tx.send_nowait(b)
    tx.close()
    with anyio.fail_after(5):
        await enrich_stage(rx, out_tx, seed, StageCounters(), bus)
    return await drained(out_rx)


def scored(number: int, ids: list[int]) -> Batch:
    return Batch(number, [(n, validate_and_score(user(i))) for n, i in enumerate(ids)])


def drawn(batches: list[Batch]) -> list[tuple[str, ...]]:
    return [tuple(c[name] for name in BUSINESS) for b in batches for _, c in b.customers]


async def test_enrich_fills_the_business_fields_drawn_for_the_seed_and_id() -> None:
    bus = Bus()
    events = Events(bus, StageTimed)
    out = await enriched([scored(1, list(range(1, 16))), scored(2, [16])], seed=7, bus=bus)
    assert [(b.page, [p for p, _ in b.customers]) for b in out] == [(1, list(range(15))), (2, [0])]
    assert drawn(out) == [RULES.business_fields(7, i) for i in range(1, 17)]
    other = await enriched([scored(1, list(range(1, 17)))], seed=8)
    assert drawn(other) == [RULES.business_fields(8, i) for i in range(1, 17)] != drawn(out)
    assert [e.stage for e in events.seen] == ["enrich"]


# -- dedup ------------------------------------------------------------------------------------


async def test_dedup_spools_every_copy_and_keeps_the_best_one_per_id(tmp_path: Path) -> None:
    # Id 7: the later copy scores higher. Id 3: equal scores, the earlier page wins, though
    # its copy sits further down its page. Id 5: same page, the earlier position wins.
    first = Batch(1, [(0, RULES.process(user(7, avatar=None), 1)),
                      (2, RULES.process(user(5, first_name="Zed"), 1)),
                      (3, RULES.process(user(5, first_name="Amy"), 1)),
                      (4, RULES.process(user(3, first_name="Early"), 1))])  # fmt: skip
    second = Batch(2, [(0, RULES.process(user(3, first_name="Late"), 1)),
                       (1, RULES.process(user(7), 1))])  # fmt: skip
    tx, rx = anyio.create_memory_object_stream[Batch](1)
    spool = SortedSpool(tmp_path, run_bytes=1)  # every customer in its own sorted run
    counters = StageCounters()
    bus = Bus()
    events = Events(bus, StageTimed)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(dedup_stage, rx, spool, counters, bus)
            async with tx:
                await tx.send(first)
                await tx.send(second)
        # The group ends only because closing the send side ended the stage.
    assert spool.offered == 6 and events.seen == [StageTimed("dedup", counters.seconds["dedup"])]
    winners = [orjson.loads(line) for line in spool.winners()]
    assert winners == [first.customers[3][1], first.customers[1][1], second.customers[1][1]]
    assert [w["first_name"] for w in winners[:2]] == ["Early", "Zed"]
    assert winners[2]["data_quality_score"] == 100
    assert (spool.unique, spool.duplicates) == (3, 3)
    assert spool.code_counts == Counter(summary_code(w) for w in winners)
    spool.close()


# -- fetch ------------------------------------------------------------------------------------


class ListSource:
    """A source serving fixed pages, except those a resumed walk already has."""

    def __init__(self, pages: list[Page]) -> None:
        self.served = pages
        self.recorded: Recorded | None = None

    def reread(self, number: int, state: str | None, headers: Any, body: bytes) -> Page:
        return Page(number, orjson.loads(body)["data"], 3, body, state, headers)

    async def pages(self, *, recorded: Recorded, stop: Any = None) -> AsyncIterator[Page]:
        self.recorded = recorded
        if recorded.complete:
            return
        for p in self.served:
            if p.number not in recorded.summaries:
                yield p


async def fetched(
    source: ListSource, checkpoint: Checkpoint | None, bus: Bus
) -> tuple[list[Page], StageCounters]:
    """Run fetch_stage over ``source`` to its end; the pages it sent, and its counters."""
    tx, rx = anyio.create_memory_object_stream[Page](10)
    counters = StageCounters()
    with anyio.fail_after(5):
        await fetch_stage(source, tx, counters, bus, checkpoint)
    return await drained(rx), counters


PAGES = [page(1, [user(1), user(2)]), page(2, [user(3)]), page(3, [])]


async def test_fetch_records_each_page_in_the_checkpoint_before_sending_it_on(
    tmp_path: Path,
) -> None:
    checkpoint = Checkpoint.open(fast_settings(output_dir=tmp_path))
    bus = Bus()
    events = Events(bus, PageDone, StageTimed)
    sent, counters = await fetched(ListSource(PAGES), checkpoint, bus)
    assert [p.number for p in sent] == [1, 2, 3] and counters.raw_records == 3
    assert counters.replayed_pages == 0
    assert events.seen[:3] == [PageDone(1, 2, False), PageDone(2, 1, False), PageDone(3, 0, False)]
    assert events.seen[3] == StageTimed("fetch", counters.seconds["fetch"])
    replayed = list(checkpoint.replay(ListSource([]).reread))
    assert [(p.number, p.body) for p in replayed] == [(p.number, p.body) for p in PAGES]
    checkpoint.close()


async def test_fetch_replays_a_resumed_checkpoint_first_and_fetches_only_the_rest(
    tmp_path: Path,
) -> None:
    settings = fast_settings(output_dir=tmp_path)
    earlier = Checkpoint.open(settings)
    earlier.record(PAGES[1])
    earlier.record(PAGES[0])
    earlier.close()
    checkpoint = Checkpoint.open(settings, "resume")
    source = ListSource(PAGES)
    bus = Bus()
    events = Events(bus, PageDone)
    sent, counters = await fetched(source, checkpoint, bus)
    assert [p.number for p in sent] == [1, 2, 3]
    assert [p.records for p in sent] == [p.records for p in PAGES]
    assert events.seen == [PageDone(1, 2, True), PageDone(2, 1, True), PageDone(3, 0, False)]
    assert counters.replayed_pages == 2 and counters.raw_records == 3
    assert source.recorded is not None and sorted(source.recorded.summaries) == [1, 2]
    assert source.recorded.last is not None and source.recorded.last.number == 2
    assert not source.recorded.complete
    checkpoint.close()


async def test_fetch_only_replays_the_checkpoint_of_a_finished_run(tmp_path: Path) -> None:
    settings = fast_settings(output_dir=tmp_path)
    earlier = Checkpoint.open(settings)
    for p in PAGES:
        earlier.record(p)
    earlier.mark_complete(3)
    earlier.close()
    checkpoint = Checkpoint.open(settings, "resume")
    source = ListSource([*PAGES, page(4, [user(9)])])  # would be sent, were it asked for
    sent, counters = await fetched(source, checkpoint, Bus())
    assert [p.number for p in sent] == [1, 2, 3] and counters.replayed_pages == 3
    assert source.recorded is not None
    assert (source.recorded.complete, source.recorded.total) == (True, 3)
    checkpoint.close()


# -- joined -----------------------------------------------------------------------------------


@pytest.mark.parametrize("buffer", [0, 1])
async def test_closing_the_first_stream_ends_every_stage_in_turn(
    tmp_path: Path, buffer: int
) -> None:
    pages_tx, pages_rx = anyio.create_memory_object_stream[Page](buffer)
    scored_tx, scored_rx = anyio.create_memory_object_stream[Batch](buffer)
    enriched_tx, enriched_rx = anyio.create_memory_object_stream[Batch](buffer)
    writer = RejectedWriter(tmp_path / "rejected.jsonl")
    spool = SortedSpool(tmp_path)
    counters = StageCounters()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(validate_stage, pages_rx, scored_tx, writer, counters,
                             records_reader())  # fmt: skip
            group.start_soon(enrich_stage, scored_rx, enriched_tx, 5, counters)
            group.start_soon(dedup_stage, enriched_rx, spool, counters)
            async with pages_tx:
                for number in range(1, 11):  # more pages than the buffers hold
                    await pages_tx.send(page(number, [user(number), {"id": None}]))
    assert spool.offered == 10 and counters.rejected == writer.count == 10
    winners = [orjson.loads(line) for line in spool.winners()]
    assert winners == [RULES.process(user(i), 5) for i in range(1, 11)]
    spool.close()
    writer.abort()
