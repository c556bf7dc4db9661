"""Wires the stages into a run: ``run_pipeline`` for the export, ``stream_customers`` to embed.

Both are one chain: fetch -> validate and score -> enrich -> dedup spool -> the spool's
winners, by customer id, in batches -> sinks. ``run_pipeline``'s sinks write the outputs
(see ``sinks``); ``stream_customers`` is the chain with a sink that yields.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from . import sinks
from ._version import __version__
from .checkpoint import Checkpoint, RunMode, check_mode, disk_full
from .dedup import SortedSpool
from .errors import IncompleteError, Interrupted, OutputError, PageFetchError, PipelineError
from .logs import current_run_id, redact, run_logging
from .monitoring import monitored
from .observe import ApiStats, Bus, DebugLog, ProgressCallback, ProgressTracker
from .observe.events import RunEnded
from .report import business_summary, export_metadata, quality_summary, utc_now
from .settings import Settings
from .sinks import RunMetadata, Sink, abort_all, batches, commit_all
from .sinks.json_document import CUSTOMERS_FILE
from .sources import Page, Source, StopSignal, Walk, open_source
from .stages import (
    Batch,
    StageCounters,
    dedup_stage,
    enrich_stage,
    fetch_stage,
    validate_stage,
)
from .writer import REPORT_FILE, RejectedWriter, RunOutputs, exclusive_folder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("customer_pipeline.pipeline")
REPORTED = "reported_to_caller"  # LogRecord attribute: the error is also raised to the caller


@dataclass(frozen=True)
class RunResult:
    """What a run produced: where the files are, the headline counts and the full report."""

    complete: bool
    failed_pages: list[int]
    incomplete_reasons: list[str]
    customers: int
    duplicates_removed: int
    rejected: int
    customers_path: Path
    report_path: Path
    rejected_path: Path | None
    log_path: Path
    report: dict[str, Any]
    # Of failed_pages, those that answered what no retry fixes (a redirect, a 404, a body over
    # max_response_bytes): a plain --resume asks them again, but the same answer comes back.
    not_retried_pages: list[int] = field(default_factory=list)
    # Every customers file the run wrote (customers_path is the first: the JSON document
    # unless --format left it out), and the databases it loaded, passwords masked.
    files: list[Path] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every page was fetched, 3 when pages may be missing (incomplete_reasons)."""
        return 0 if self.complete else 3


STOP_GRACE_S = 1.0


async def run_pipeline(
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    on_progress: ProgressCallback | None = None,
    mode: RunMode = "new",
    keep_checkpoint: bool = False,
    stop: StopSignal | None = None,
    registry: CollectorRegistry | None = None,
) -> RunResult:
    """Fetch, validate, score, enrich and deduplicate every customer; write the outputs.

    Pages that fail after every retry do not stop the run: the result says ``complete=False``
    and lists them. Errors no retry can fix (bad key, wrong URL) raise a PipelineError.

    Every completed page is recorded in a checkpoint in the output folder as it arrives.
    A complete run deletes it (``keep_checkpoint`` keeps it, marked complete, and the next
    run discards it); an incomplete, failed or interrupted one keeps it. ``mode="new"``
    refuses to start over an unfinished run's checkpoint, ``"resume"`` fetches only the pages
    it lacks (none, for a complete one), ``"restart"`` discards it first. Once ``stop`` is
    set, no new page is started and the run raises Interrupted when the pages in flight are
    in (or after a second at most).

    The run's Prometheus metrics go into ``registry`` when one is given (runs sharing it add
    up), and are served, pushed or written as ``settings`` ask (metrics_port, pushgateway,
    metrics_file).
    """
    check_mode(mode)
    bus = Bus()
    with (
        run_logging(settings.log_path, settings.log_level, settings.secrets, settings.log_format),
        _reported(),
        exclusive_folder(settings.output_dir, sinks.output_files()),
    ):
        checkpoint = Checkpoint.open(settings, mode)
        result: RunResult | None = None
        kept: int | None = None
        decided = False
        try:
            async with monitored(settings, bus, registry):
                try:
                    with _failure_announced(bus):
                        result = await _run(settings, http, on_progress, checkpoint, stop, bus)
                finally:
                    # Before the metrics are pushed: a kill while a slow Pushgateway answers
                    # must not leave a finished run's checkpoint in the next run's way.
                    decided = True
                    kept = _keep_or_discard(checkpoint, result, keep_checkpoint)
        except OutputError as exc:
            # Only now is it known whether the checkpoint is kept, so the fix is said here.
            if not decided:
                kept = _keep_or_discard(checkpoint, None, keep_checkpoint)
            full = disk_full(exc)
            raise OutputError(f"{exc}; {_after_output_error(kept, full)}", disk_full=full) from exc
        except BaseException:
            if not decided:
                _keep_or_discard(checkpoint, None, keep_checkpoint)
            raise
        assert result is not None  # the block returned, so the run did
        return result


def _keep_or_discard(checkpoint: Checkpoint, result: RunResult | None, keep: bool) -> int | None:
    """Delete a finished run's checkpoint, or keep it for --resume (marked if complete).

    Returns the pages kept (-1 when they cannot be counted), None when nothing is kept.
    """
    if result is not None and result.complete and not keep:
        checkpoint.discard()
        return None
    if result is not None and result.complete:
        try:
            checkpoint.mark_complete(result.report["api"]["total_pages"])
        except OutputError as exc:
            log.warning("checkpoint kept but not marked complete: %s", exc)
    try:
        pages = len(checkpoint)
    except sqlite3.Error:
        pages = -1
    if result is None and pages == 0:
        checkpoint.discard()  # nothing worth resuming
        return None
    checkpoint.close()
    log.info("checkpoint kept: %s (%s pages)", checkpoint.path, pages if pages >= 0 else "?")
    return pages


def _after_output_error(kept: int | None, full: bool) -> str:
    """What to do after an output or the checkpoint could not be written."""
    fix = "free space" if full else "fix that"
    if kept is None:
        return f"no page was saved: {fix}, then run the same command again"
    saved = f"keeps the {kept} pages saved so far" if kept >= 0 else "is kept"
    return f"the checkpoint {saved}: {fix}, then run the same command with --resume to finish"


@contextlib.contextmanager
def _failure_announced(bus: Bus) -> Iterator[None]:
    """Emit RunEnded (failed or interrupted) when the run raises; a run that ends emits its own."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        stopped = isinstance(exc, Interrupted | KeyboardInterrupt | anyio.get_cancelled_exc_class())
        outcome = "interrupted" if stopped else "failed"
        bus.emit(RunEnded(outcome, time.perf_counter() - started, time.time()))
        raise


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Log a PipelineError once, marked so a front end that shows it itself can skip it."""
    try:
        yield
    except Interrupted as exc:
        log.warning("%s", exc, extra={REPORTED: True})
        raise
    except PipelineError as exc:
        log.error("run failed: %s", exc, extra={REPORTED: True})
        raise


async def run_stages(
    settings: Settings,
    source: Source,
    checkpoint: Checkpoint | None,
    counters: StageCounters,
    rejected: RejectedWriter,
    spool: SortedSpool,
    bus: Bus,
    stop: StopSignal | None,
) -> None:
    """Run the four stages in one task group until the last page is spooled."""
    buffer = max(2, settings.concurrency)
    pages_tx, pages_rx = anyio.create_memory_object_stream[Page](buffer)
    scored_tx, scored_rx = anyio.create_memory_object_stream[Batch](buffer)
    enriched_tx, enriched_rx = anyio.create_memory_object_stream[Batch](buffer)
    finished = anyio.Event()

    async def last_stage() -> None:
        await dedup_stage(enriched_rx, spool, counters, bus)
        finished.set()

    try:
        async with (
            checkpoint.committing() if checkpoint is not None else contextlib.nullcontext(),
            anyio.create_task_group() as group,
        ):
            group.start_soon(fetch_stage, source, pages_tx, counters, bus, checkpoint, stop)
            group.start_soon(validate_stage, pages_rx, scored_tx, rejected, counters,
                             source.records, bus)  # fmt: skip
            group.start_soon(enrich_stage, scored_rx, enriched_tx, settings.seed, counters, bus)
            group.start_soon(last_stage)
            if stop is not None:
                group.start_soon(_cancel_after_stop, stop, finished, group.cancel_scope)
    except BaseExceptionGroup as group_error:
        raise _first_error(group_error) from None


async def _cancel_after_stop(
    stop: StopSignal, finished: anyio.Event, stages: anyio.CancelScope
) -> None:
    """Once ``stop`` is set, give the pages in flight STOP_GRACE_S, then cancel the stages."""
    async with anyio.create_task_group() as watch:

        async def on_stop() -> None:
            await stop.wait()
            log.warning("stopping: no new pages; waiting up to %.0fs for those in flight",
                        STOP_GRACE_S)  # fmt: skip
            with anyio.move_on_after(STOP_GRACE_S):
                await finished.wait()
            stages.cancel()

        async def on_finish() -> None:
            await finished.wait()
            watch.cancel_scope.cancel()

        watch.start_soon(on_stop)
        watch.start_soon(on_finish)


async def _run(
    settings: Settings,
    http: httpx.AsyncClient | None,
    on_progress: ProgressCallback | None,
    checkpoint: Checkpoint,
    stop: StopSignal | None,
    bus: Bus,
) -> RunResult:
    out = settings.output_dir
    started_at = utc_now()
    started = time.perf_counter()
    log.info(
        "run started: source=%s concurrency=%d rate_limit=%s per_page=%d seed=%d transport=%s",
        settings.base_url,
        settings.concurrency,
        settings.rate_limit,
        settings.per_page,
        settings.seed,
        settings.transport,
    )
    counters = StageCounters()
    stats = ApiStats().attach(bus)
    ProgressTracker(on_progress).attach(bus)
    if settings.log_level == "DEBUG":  # else nobody listens, and the events cost nothing more
        DebugLog(settings.max_retries).attach(bus)
    outputs = RunOutputs(out, sinks.output_files())
    chosen = sinks.create(_sink_targets(settings), outputs, settings)
    spool = SortedSpool(out)
    cluster = contextlib.AsyncExitStack()  # a cluster run's Dask client, while the spool reads
    try:
        for sink in chosen:  # before the first request: a sink that cannot work fails fast
            await sink.open()
        walk: Walk
        if settings.dask is not None:
            from .cluster import run_on_cluster

            walk = await run_on_cluster(settings, bus, checkpoint, counters, outputs.rejected,
                                        spool, stop, cluster, http=http)  # fmt: skip
        else:
            async with open_source(settings, bus, http=http) as source:
                await run_stages(settings, source, checkpoint, counters, outputs.rejected, spool,
                                 bus, stop)  # fmt: skip
            walk = source
        if stop is not None and stop.is_set():
            recorded = len(checkpoint)
            if recorded:
                message = (f"interrupted: {recorded} pages are saved in {checkpoint.path}; run "
                           "the same command again with --resume to finish")  # fmt: skip
            else:  # the empty checkpoint is deleted: there is nothing to resume
                message = ("interrupted before any page came in: no page was saved; run the "
                           "same command again to start over")  # fmt: skip
            raise Interrupted(message, pages_recorded=recorded)
        fetched_at = time.perf_counter()
        failed_pages = sorted(walk.failed)
        # A reason may quote what the server sent (a next URL), which may echo the key.
        reasons = [redact(reason, settings.secrets) for reason in walk.incomplete_reasons()]
        complete = not reasons
        for reason in reasons:
            log.warning("incomplete: %s", reason)
        for sink in chosen if not complete else ():
            if (told := getattr(sink, "run_incomplete", None)) is not None:
                told()  # a database sink in replace mode keeps what the run did not see
        for batch in batches(spool.winners()):
            for sink in chosen:
                await sink.write(batch)
        quality = quality_summary(spool.code_counts)
        export = export_metadata(
            total_customers=spool.unique,
            bands=quality["bands"],
            complete=complete,
            failed_pages=failed_pages,
            incomplete_reasons=reasons,
            source=settings.base_url,
            seed=settings.seed,
        )
    except BaseException:
        await abort_all(chosen)
        outputs.abort()
        raise
    finally:
        spool.close()
        await cluster.aclose()
    write_seconds = time.perf_counter() - fetched_at
    elapsed = time.perf_counter() - started
    report = {
        "run": {
            "run_id": current_run_id(),
            "started_at": started_at,
            "finished_at": utc_now(),
            "elapsed_s": round(elapsed, 3),
            "complete": complete,
            "failed_pages": failed_pages,
            "incomplete_reasons": reasons,
            "resumed_pages": counters.replayed_pages,
            "source": settings.base_url,
            "seed": settings.seed,
            "pipeline_version": __version__,
            "settings": _public_settings(settings),
        },
        "counts": {
            "raw_records": counters.raw_records,
            "unique_customers": spool.unique,
            "duplicates_removed": spool.duplicates,
            "rejected": counters.rejected,
        },
        "quality": quality,
        "business_fields": business_summary(spool.code_counts),
        "api": {
            **stats.as_dict(),
            "total_pages": walk.total_units,
            "failed_pages": failed_pages,
        },
        "timings": {
            **{f"{name}_s": round(s, 3) for name, s in counters.seconds.items()},
            "write_s": round(write_seconds, 3),
            "total_s": round(elapsed, 3),
            "records_per_s": round(counters.raw_records / elapsed, 1) if elapsed else 0.0,
        },
    }
    report_path = out / REPORT_FILE
    rejected_path = await _commit(chosen, outputs, RunMetadata(export, report))
    files = [out / name for sink in chosen if not sink.transactional for name in sink.files]
    log.info(
        "run %s: %d customers (high %d, medium %d, low %d), %d duplicates removed, "
        "%d rejected, %d requests, %d retries, %.2fs",
        "complete" if complete else f"INCOMPLETE ({'; '.join(reasons)})",
        spool.unique,
        quality["bands"]["high_quality"],
        quality["bands"]["medium_quality"],
        quality["bands"]["low_quality"],
        spool.duplicates,
        counters.rejected,
        stats.requests,
        stats.retries,
        elapsed,
    )
    bus.emit(RunEnded("complete" if complete else "incomplete", elapsed, time.time(),
                      quality["bands"], spool.unique, spool.duplicates))  # fmt: skip
    return RunResult(
        complete=complete,
        failed_pages=failed_pages,
        incomplete_reasons=reasons,
        customers=spool.unique,
        duplicates_removed=spool.duplicates,
        rejected=counters.rejected,
        customers_path=files[0] if files else out / CUSTOMERS_FILE,
        report_path=report_path,
        rejected_path=rejected_path,
        log_path=settings.log_path,
        report=report,
        not_retried_pages=walk.not_retried,
        files=files,
        databases=[sink.label for sink in chosen if sink.transactional],
    )


def _sink_targets(settings: Settings) -> list[str]:
    """The run's sinks: format names, then database URLs."""
    return [*settings.format, *(url.get_secret_value() for url in settings.db)]


async def _commit(chosen: list[Sink], outputs: RunOutputs, metadata: RunMetadata) -> Path | None:
    """Commit the sinks, then publish the folder's set; returns the rejects file, if any."""
    try:
        return await commit_all(chosen, metadata, lambda: outputs.commit(metadata.report))
    except BaseException:
        outputs.abort()
        raise


async def stream_customers(
    settings: Settings, *, http: httpx.AsyncClient | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The customers ``run_pipeline`` would export, by customer_id, each once; no files written.

    The same chain as run_pipeline, checkpoint-free, with a sink that yields: deduplicated
    by the same rule (the best copy of each customer), so the first customer comes once the
    last page is in, and memory stays small whatever the count (the spool's scratch files
    are in the temp folder, unlinked). Rejected records are logged with their page,
    position, id and reason. An incomplete run raises after the last customer:
    PageFetchError when pages failed after every retry, else IncompleteError (max_pages).
    Cancelling it while it fetches stops the fetching. A loop left early keeps the scratch
    files open until the generator is closed, which Python does only when it is collected:
    ``async with contextlib.aclosing(stream_customers(settings)) as customers`` closes it.
    """
    counters = StageCounters()
    spool = SortedSpool(Path(tempfile.gettempdir()))
    try:
        async with open_source(settings, Bus(), http=http) as source:
            await run_stages(settings, source, None, counters, _LoggedRejects(), spool, source.bus,
                          None)  # fmt: skip
        for batch in batches(spool.winners()):
            for customer in batch.records():
                yield customer
    finally:
        spool.close()
    failed = sorted(source.failed)
    reasons = [
        redact(r, settings.secrets) for r in source.incomplete_reasons()
    ]
    if failed:
        first = source.failed[failed[0]]
        raise PageFetchError(
            f"incomplete: {'; '.join(reasons)}; first failure: {first}",
            page=failed[0],
            url=first.url,
            cause=first.cause,
        )
    if reasons:
        raise IncompleteError(f"incomplete: {'; '.join(reasons)}", reasons=reasons)


class _LoggedRejects(RejectedWriter):
    """Rejected records logged (page, position, id as sent, reason), not written to a file."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))  # never opened: write() is all it does

    def write(self, page: int, position: int, reason: str, record: Any) -> None:
        """Log one rejected record."""
        shown = ""
        if isinstance(record, dict) and "id" in record:
            ident = repr(record["id"])
            shown = f" (id {ident if len(ident) <= 60 else ident[:57] + '...'})"
        log.warning("page %d record %d%s rejected: %s", page, position, shown, reason)
        self.count += 1


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one error worth reporting from a failed task group (a PipelineError if any)."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for error in leaves:
        if isinstance(error, PipelineError):
            return error
    return leaves[0] if leaves else group


def _public_settings(settings: Settings) -> dict[str, Any]:
    """The settings of the run, without the key."""
    return settings.model_dump(mode="json", exclude={"api_key"})
