"""The client side of a cluster run: plan the shards, run them on Dask, merge what they return.

The client fetches the first unit (it says how many there are), cuts a random-access walk
into contiguous shards (a sequential one is one task), submits one task per shard and, as
each finishes, replays its events on the run's bus (report, progress, metrics) and writes
its rejects. Then each shard's sorted entries join the run's spool as one more sorted run,
pulled a chunk at a time: the spool's merge keeps the best copy of each customer by the same
key as one process, so the sinks receive exactly what a one-process run gives them.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import resource
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import anyio
import httpx

from ..checkpoint import SHARDS_DIR, Checkpoint
from ..dedup import SortedSpool
from ..errors import ConfigError, Interrupted, PipelineError
from ..logs import SHOWN
from ..observe import Bus, StageTimed
from ..settings import Settings
from ..sources import StopSignal, Unit, open_source
from ..sources.plan import UnitPlan
from ..sources.source import failure_reasons, short_count_reason
from ..stages import StageCounters
from ..writer import RejectedWriter
from .shards import ShardSpec, default_shards, plan_shards
from .task import ShardFailed, ShardSummary, run_shard, shard_chunk, shard_summary

# distributed's own annotations are partial: its objects are Any here, used through few calls.
Client = Any
Future = Any

log = logging.getLogger("customer_pipeline.cluster")

INSTALL_HINT: Final = "pip install 'customer-pipeline[dask]'"
CONNECT_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.05  # how often the client looks at the futures and the stop signal


class ClusterWalk:
    """The walk over every shard, as the run sees it (a sources.Walk)."""

    def __init__(self, total_units: int | None) -> None:
        self.failed: dict[int, str | None] = {}
        self.total_units = total_units
        self.reasons: list[str] = []

    @property
    def not_retried(self) -> list[int]:
        """The failed units whose answer no retry fixes, by number."""
        return sorted(n for n, answer in self.failed.items() if answer is not None)

    def incomplete_reasons(self) -> list[str]:
        """Why the shards' units may not be all of them; empty when they are."""
        return failure_reasons(self.failed) + self.reasons


class ShardStream:
    """A finished shard's entries, pulled from its worker one chunk ahead (a sorted run)."""

    def __init__(self, client: Client, output: Future, chunks: int) -> None:
        self._client = client
        self._output: Future | None = output
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        if self._output is None:
            return
        output, submit = self._output, self._client.submit
        ahead = submit(shard_chunk, output, 0) if self._chunks else None
        for index in range(self._chunks):
            current = ahead
            ahead = submit(shard_chunk, output, index + 1) if index + 1 < self._chunks else None
            assert current is not None
            data = current.result()
            current.release()
            yield from io.BytesIO(data)
        if ahead is not None:
            ahead.release()

    def close(self) -> None:
        """Let the worker drop the shard's output."""
        if self._output is not None:
            self._output.release()
            self._output = None


async def run_on_cluster(
    settings: Settings,
    bus: Bus,
    checkpoint: Checkpoint,
    counters: StageCounters,
    rejected: RejectedWriter,
    spool: SortedSpool,
    stop: StopSignal | None,
    stack: contextlib.AsyncExitStack,
    *,
    http: httpx.AsyncClient | None = None,
) -> ClusterWalk:
    """Run the walk as Dask tasks; their customers end up in ``spool``, merged.

    The Dask client (and a local cluster) live until ``stack`` closes: the spool pulls the
    shards' entries from the workers while the run writes its sinks.
    """
    client = await _connect(settings.dask or "", stack)
    started = time.perf_counter()  # the fetch stage's wall time, without the cluster's start
    workers = len(client.scheduler_info().get("workers", {}))
    log.info("dask: %d workers at %s", workers, client.scheduler.address)
    # Above the progress bar, as the metrics port is: the one place to watch the workers.
    if link := _dashboard_link(client):
        log.info("dask dashboard: %s while the run lasts", link, extra={SHOWN: True})
    else:
        log.info("dask: the scheduler serves no dashboard (started with --no-dashboard?)")
    async with open_source(settings, bus, http=http) as source:
        first = await source.fetch(Unit(source.paginator.first))
        sharded = source.paginator.random_access(first)
        plan = UnitPlan(first, {}, settings.max_pages, None, window=1)
    # The folder's checkpoint then holds a unit: an interrupted or killed run keeps it (and
    # the shards' checkpoints, which go with it), so --resume resumes the shards.
    checkpoint.record(first)
    checkpoint.commit()
    token = uuid.uuid4().hex
    # Workers on other machines resolve a relative folder against their own directory.
    settings = settings.model_copy(update={"output_dir": settings.output_dir.resolve()})
    specs: list[ShardSpec] = []
    if sharded and not plan.ordered:
        count = settings.shards or default_shards(workers)
        for index, (lo, hi) in enumerate(plan_shards(first.number, plan.last, count)):
            specs.append(ShardSpec(index, lo, hi, first.number, dict(first.headers or {}),
                                   first.body, token, checkpoint.resumed))  # fmt: skip
        log.info("%d units in %d shards", plan.last - first.number + 1, len(specs))
    else:
        log.warning("paginator %s walks its pages one after the other: the run is one task on "
                    "one worker (only page-numbered and offset walks with a page count are "
                    "sharded)", settings.paginator)  # fmt: skip
        specs.append(ShardSpec(0, first.number, None, first.number, None, b"", token,
                               checkpoint.resumed, whole=True))  # fmt: skip
    # A rerun of a task that raised resumes the shard's checkpoint (same token); a killed
    # worker is counted by Dask's own allowed-failures instead.
    futures = [
        client.submit(run_shard, settings, spec, key=f"customer-pipeline-{token}-shard-{spec.name}",
                      pure=False, retries=settings.dask_retries)
        for spec in specs
    ]  # fmt: skip
    walk = ClusterWalk(plan.known_total if not plan.ordered else None)
    summaries = await _gather(client, futures, specs, bus, stop, settings)
    fetch_s = time.perf_counter() - started
    short: list[int] = []
    last = 0
    for summary, future in zip(summaries, futures, strict=True):
        walk.failed.update(summary.failures)
        walk.reasons += summary.reasons
        if summary.total_units is not None:
            walk.total_units = max(walk.total_units or 0, summary.total_units)
        counters.raw_records += summary.raw_records
        counters.replayed_pages += summary.replayed_pages
        for stage, seconds in summary.seconds.items():
            if stage != "fetch":
                counters.seconds[stage] += seconds
        for page, position, reason, record in summary.rejected:
            rejected.write(page, position, reason, record)
        short += summary.walked.short
        last = max(last, summary.walked.last)
        spool.merge_in(ShardStream(client, future, summary.chunks), summary.offered)
    counters.rejected = rejected.count
    counters.seconds["fetch"] = fetch_s
    bus.emit(StageTimed("fetch", fetch_s))
    if not specs[0].whole:
        # Every record of the walk's pages, replayed from a shard's checkpoint or fetched.
        walk.reasons += _whole_walk_reasons(source, first.total_records, counters.raw_records,
                                            short, last, walk)  # fmt: skip
    return walk


def _dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard URL; None when it serves none."""
    try:
        link: str | None = client.dashboard_link
    except KeyError:  # a scheduler without the dashboard service (dask scheduler --no-dashboard)
        return None
    return link


def _whole_walk_reasons(
    source: Any, reported: int | None, seen: int, short: list[int], last: int, walk: ClusterWalk
) -> list[str]:
    """The checks of a whole fan-out that no single shard can make."""
    reasons: list[str] = []
    if reason := source.short_page_reason(sorted(short), last):
        reasons.append(reason)
    if reported is not None and not walk.failed and not walk.reasons and not reasons:
        pages = walk.total_units or 0
        if seen < reported:
            reasons.append(short_count_reason(reported, seen, pages))
    return reasons


async def _gather(
    client: Client,
    futures: list[Future],
    specs: list[ShardSpec],
    bus: Bus,
    stop: StopSignal | None,
    settings: Settings,
) -> list[ShardSummary]:
    """Each shard's summary, its events replayed as it finishes; Interrupted on ``stop``."""
    summaries: dict[int, ShardSummary] = {}
    pending = dict(enumerate(futures))
    while pending:
        if stop is not None and stop.is_set():
            await anyio.to_thread.run_sync(client.cancel, list(pending.values()))
            raise Interrupted(
                f"interrupted: the finished shards and the pages fetched so far are kept in "
                f"{settings.output_dir / SHARDS_DIR} (when the workers share that disk); run "
                "the same command again with --resume to finish",
                pages_recorded=0,
            )
        done = [index for index, future in pending.items() if future.done()]
        for index in done:
            future = pending.pop(index)
            summary = await anyio.to_thread.run_sync(_summary, client, future, specs[index])
            log.info("shard %s done: %d records, %d chunks, worker peak RSS %.0f MB",
                     specs[index].name, summary.raw_records, summary.chunks,
                     summary.peak_rss_mb)  # fmt: skip
            for event in summary.events:
                bus.emit(event)
            summary.events = []
            summaries[index] = summary
        if pending and not done:
            await anyio.sleep(POLL_S)
    return [summaries[index] for index in range(len(futures))]


def _summary(client: Client, future: Future, spec: ShardSpec) -> ShardSummary:
    """A finished shard's summary; its error, as the run's, if it failed."""
    killed: Any = importlib.import_module("distributed").KilledWorker
    try:
        summary: ShardSummary = client.submit(shard_summary, future).result()
    except ShardFailed as exc:
        raise PipelineError(str(exc)) from None
    except killed as exc:
        raise PipelineError(
            f"shard {spec.index} (pages {spec.name}) was lost with every worker that ran it "
            f"({exc}); the workers may run out of memory: see their logs, then run the same "
            "command again with --resume"
        ) from None
    return summary


async def _connect(address: str, stack: contextlib.AsyncExitStack) -> Client:
    """A Dask client of ``address`` (local:N starts a local cluster), closed with ``stack``."""
    try:
        dask: Any = importlib.import_module("distributed")
    except ImportError:
        raise ConfigError(f"--dask needs the distributed package: {INSTALL_HINT}") from None

    def start() -> Client:
        if address.startswith("local:"):
            # Processes, one thread each: the stages are Python, so threads would share a GIL.
            cluster = dask.LocalCluster(n_workers=int(address.removeprefix("local:")),
                                   threads_per_worker=1, processes=True,
                                   dashboard_address="127.0.0.1:0")  # fmt: skip
            try:
                return dask.Client(cluster)
            except BaseException:
                cluster.close()
                raise
        try:
            return dask.Client(address, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise PipelineError(
                f"cannot reach the Dask scheduler at {address} ({exc}): start it with "
                "`dask scheduler` and its workers with `dask worker tcp://HOST:8786`, or "
                "check --dask"
            ) from None

    client = await anyio.to_thread.run_sync(start)

    def close() -> None:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
        # The merge has run by now: what the client held at most (its own, not the workers').
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("dask client closed; client peak RSS %.0f MB", peak)

    stack.push_async_callback(anyio.to_thread.run_sync, close)
    return client
