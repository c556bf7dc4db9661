"""The worker side: one shard run through the same stages, returned sorted through Dask.

A shard's result is its spool's winners as spooled (sort key, JSON, newline), cut into
chunks of about CHUNK_BYTES, plus a small ShardSummary. The result stays on the worker:
the client asks for the summary, then for one chunk at a time as its merge needs it, so
neither side holds the whole run. Sorted JSON lines rather than Arrow record batches: the
lines are the exact bytes a one-process run writes (the export must be identical), the
merge compares their keys as bytes, and Dask ships bytes without copies just as it ships
Arrow buffers, so Arrow would only add a conversion each way and pyarrow on every worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
import tempfile
from pathlib import Path
from typing import Any, Final

import anyio

from ..checkpoint import CHECKPOINT_FILE, SHARDS_DIR, Checkpoint, RunMode
from ..dedup import SortedSpool
from ..errors import PipelineError
from ..observe import Bus, events
from ..pipeline import run_stages
from ..settings import Settings
from ..sources import Shard, open_source
from ..sources.source import Walked
from ..stages import StageCounters
from ..writer import RejectedWriter
from .shards import ShardSpec

log = logging.getLogger("customer_pipeline.cluster")

CHUNK_BYTES: Final = 1 << 20
TOKEN_FILE: Final = "run-token"
# Every event type a stage, the source or the fetcher emits: the client replays them.
EVENT_TYPES: Final = tuple(
    kind
    for kind in vars(events).values()
    if isinstance(kind, type) and dataclasses.is_dataclass(kind)
    and kind.__module__ == events.__name__ and kind is not events.RunEnded
)  # fmt: skip


class ShardFailed(Exception):
    """A shard stopped on an error no retry fixes (a bad key, a full disk): its message."""


@dataclasses.dataclass
class ShardSummary:
    """What a finished shard reports besides its customers."""

    index: int
    offered: int
    raw_records: int
    rejected: list[tuple[int, int, str, Any]]
    replayed_pages: int
    seconds: dict[str, float]
    failures: dict[int, str | None]  # see Source.failures
    reasons: list[str]  # incomplete reasons other than failed units
    walked: Walked
    total_units: int | None
    events: list[object]
    chunks: int
    checkpoint: str
    peak_rss_mb: float  # the worker process's, when the shard finished


@dataclasses.dataclass
class ShardOutput:
    """A finished shard: its summary and its sorted entries in chunks (kept on the worker)."""

    summary: ShardSummary
    chunks: list[bytes]


def shard_summary(output: ShardOutput) -> ShardSummary:
    """The summary of a finished shard (a task of its own, run where the output is)."""
    return output.summary


def shard_chunk(output: ShardOutput, index: int) -> bytes:
    """One chunk of a finished shard's entries (a task of its own, run where the output is)."""
    return output.chunks[index]


def run_shard(settings: Settings, spec: ShardSpec) -> ShardOutput:
    """Fetch and process one shard; the Dask task (runs in a worker thread)."""
    try:
        return anyio.run(_run_shard, settings, spec)
    except PipelineError as exc:
        # Plain text across the wire: the library's errors take keyword arguments, which
        # pickle does not give back.
        raise ShardFailed(f"shard {spec.index} (pages {spec.name}): {exc}") from None


class _Rejects(RejectedWriter):
    """Rejected records kept for the client, which writes the run's file."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))  # never opened: write() is all it does
        self.records: list[tuple[int, int, str, Any]] = []

    def write(self, page: int, position: int, reason: str, record: Any) -> None:
        """Keep one rejected record."""
        self.records.append((page, position, reason, record))
        self.count += 1


async def _run_shard(settings: Settings, spec: ShardSpec) -> ShardOutput:
    bus = Bus()
    recorded: list[object] = []
    for kind in EVENT_TYPES:
        bus.subscribe(kind, recorded.append)
    counters = StageCounters()
    rejects = _Rejects()
    spool = SortedSpool(Path(tempfile.gettempdir()))
    checkpoint = _open_checkpoint(settings, spec)
    try:
        async with open_source(settings, bus) as source:
            if not spec.whole:
                first = source.reread(spec.first_number, None, spec.first_headers,
                                      spec.first_body)  # fmt: skip
                source.shard = Shard(first, spec.lo, spec.hi)
            await run_stages(settings, source, checkpoint, counters, rejects, spool, bus, None)
        chunks = _chunks(spool)
        if not source.failed and not source.other_reasons():
            # A recomputed shard only replays it; one with failed pages fetches them again.
            checkpoint.mark_complete(source.total_units)
    finally:
        spool.close()
        checkpoint.close()
    summary = ShardSummary(
        index=spec.index,
        offered=spool.offered,
        raw_records=counters.raw_records,
        rejected=rejects.records,
        replayed_pages=counters.replayed_pages,
        seconds=counters.seconds,
        failures=source.failures(),
        reasons=source.other_reasons(),
        walked=source.walked,
        total_units=source.total_units,
        events=recorded,
        chunks=len(chunks),
        checkpoint=str(checkpoint.path),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return ShardOutput(summary, chunks)


def _chunks(spool: SortedSpool) -> list[bytes]:
    """The spool's winners as spooled, in chunks of about CHUNK_BYTES ending at a line."""
    chunks: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for entry in spool.entries():
        chunk.append(entry)
        size += len(entry)
        if size >= CHUNK_BYTES:
            chunks.append(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        chunks.append(b"".join(chunk))
    return chunks


def _open_checkpoint(settings: Settings, spec: ShardSpec) -> Checkpoint:
    """The shard's own checkpoint: resumed on a retry of this run or on --resume.

    Under the output folder when the worker can write there (a shared disk: a retry on
    another worker resumes it), else in the worker's temp folder (a retry on this worker
    resumes it; one elsewhere fetches the shard again).
    """
    where = settings.output_dir / SHARDS_DIR / spec.name
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        where = Path(tempfile.gettempdir()) / "customer-pipeline-shards" / spec.token / spec.name
        where.mkdir(parents=True, exist_ok=True)
    token_file = where / TOKEN_FILE
    try:
        retry = token_file.read_text() == spec.token
    except OSError:
        retry = False
    mode: RunMode = "resume" if retry or spec.resume else "restart"
    if mode == "resume" and (where / CHECKPOINT_FILE).exists():
        log.info("shard %s resumes its checkpoint in %s", spec.name, where)
    checkpoint = Checkpoint.open(settings.model_copy(update={"output_dir": where}), mode)
    with contextlib.suppress(OSError):
        token_file.write_text(spec.token)
    return checkpoint
