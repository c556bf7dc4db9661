"""Wires the stages into a run: ``run_pipeline`` for the export, ``stream_customers`` to embed."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from ._version import __version__
from .checkpoint import Checkpoint, RunMode, check_mode
from .client import ReqresClient
from .dedup import SortedSpool
from .errors import Interrupted, OutputError, PageFetchError, PipelineError
from .logs import run_logging
from .observe import ApiStats, Bus, ProgressCallback, ProgressTracker
from .report import business_summary, export_metadata, quality_summary, utc_now
from .rules import Rejected, process
from .settings import Settings
from .sources import Page, Source, StopSignal, open_source
from .stages import (
    Batch,
    StageCounters,
    dedup_stage,
    enrich_stage,
    fetch_stage,
    validate_stage,
)
from .writer import REPORT_FILE, RejectedWriter, RunOutputs, exclusive_folder

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
    """
    check_mode(mode)
    secret = settings.api_key.get_secret_value()
    with (
        run_logging(settings.log_path, settings.log_level, [secret]),
        _reported(),
        exclusive_folder(settings.output_dir),
    ):
        checkpoint = Checkpoint.open(settings, mode)
        result: RunResult | None = None
        try:
            result = await _run(settings, http, on_progress, checkpoint, stop)
        finally:
            _keep_or_discard(checkpoint, result, keep_checkpoint)
        return result


def _keep_or_discard(checkpoint: Checkpoint, result: RunResult | None, keep: bool) -> None:
    """Delete a finished run's checkpoint, or keep it for --resume (marked if complete)."""
    if result is not None and result.complete and not keep:
        checkpoint.discard()
        return
    if result is not None and result.complete:
        try:
            checkpoint.mark_complete(result.report["api"]["total_pages"])
        except OutputError as exc:
            log.warning("checkpoint kept but not marked complete: %s", exc)
    try:
        pages: int | str = len(checkpoint)
    except sqlite3.Error:
        pages = "unknown"
    if result is None and pages == 0:
        checkpoint.discard()  # nothing worth resuming
        return
    checkpoint.close()
    log.info("checkpoint kept: %s (%s pages)", checkpoint.path, pages)


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


async def _stages(
    settings: Settings,
    source: Source,
    checkpoint: Checkpoint,
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
        async with checkpoint.committing(), anyio.create_task_group() as group:
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
    bus = Bus()
    stats = ApiStats().attach(bus)
    ProgressTracker(on_progress).attach(bus)
    outputs = RunOutputs(out)
    spool = SortedSpool(out)
    try:
        async with open_source(settings, bus, http=http) as source:
            await _stages(settings, source, checkpoint, counters, outputs.rejected, spool, bus,
                          stop)  # fmt: skip
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
        failed_pages = sorted(source.failed)
        reasons = source.incomplete_reasons()
        complete = not reasons
        for reason in reasons:
            log.warning("incomplete: %s", reason)
        quality: dict[str, Any] = {}

        def metadata() -> dict[str, Any]:
            quality.update(quality_summary(spool.code_counts))
            return export_metadata(
                total_customers=spool.unique,
                bands=quality["bands"],
                complete=complete,
                failed_pages=failed_pages,
                incomplete_reasons=reasons,
                source=settings.base_url,
                seed=settings.seed,
            )

        customers_path = outputs.write_customers(spool.winners(), metadata)
    except BaseException:
        outputs.abort()
        raise
    finally:
        spool.close()
    write_seconds = time.perf_counter() - fetched_at
    elapsed = time.perf_counter() - started
    report = {
        "run": {
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
            "total_pages": source.total_units,
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
    rejected_path = outputs.commit(report)
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
    return RunResult(
        complete=complete,
        failed_pages=failed_pages,
        incomplete_reasons=reasons,
        customers=spool.unique,
        duplicates_removed=spool.duplicates,
        rejected=counters.rejected,
        customers_path=customers_path,
        report_path=report_path,
        rejected_path=rejected_path,
        log_path=settings.log_path,
        report=report,
    )


async def stream_customers(
    settings: Settings, *, http: httpx.AsyncClient | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Processed customers as they are produced, page by page, with no files written.

    Not deduplicated: a customer that appears on two pages is yielded twice (keep the highest
    ``data_quality_score``, as run_pipeline does). Rejected records are skipped and logged.
    If some pages failed after every retry, a PageFetchError naming them is raised once
    every other customer has been yielded, so nothing goes missing silently.
    """
    async with ReqresClient(settings, http=http) as client:
        async for page in client.iter_pages():
            for position, raw in enumerate(page.records):
                try:
                    customer = process(raw, settings.seed)
                except Rejected as exc:
                    log.warning("page %d record %d rejected: %s", page.number, position, exc)
                    continue
                yield customer
        if client.failed_pages:
            failed = sorted(client.failed_pages)
            first = client.failed_pages[failed[0]]
            raise PageFetchError(
                f"{len(failed)} page(s) failed after every retry: {failed}; first: {first}",
                page=failed[0],
                url=first.url,
                cause=first.cause,
            )


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
