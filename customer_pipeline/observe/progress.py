"""Progress: a snapshot to a callback (the CLI's bar) after every page, a log line now and then."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .bus import Bus
from .events import PageDone, RequestDone, Retrying, UnitFailed, UnitsKnown

log = logging.getLogger("customer_pipeline.stages")
PROGRESS_LOG_EVERY_S = 2.0


@dataclass
class Progress:
    """A snapshot for progress displays."""

    pages_done: int
    pages_total: int | None
    records: int
    retries: int
    rate_limited: int
    failed_pages: int
    # Rates count the pages fetched now, not those replayed from a checkpoint (instant).
    elapsed_s: float = 0.0
    pages_per_s: float = 0.0
    records_per_s: float = 0.0
    eta_s: float | None = None  # None until the total and a rate are known


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Keeps the figures a progress display shows; reports them as pages come in."""

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        *,
        log_every_s: float = PROGRESS_LOG_EVERY_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.callback = callback
        self.log_every_s = log_every_s
        self.pages = 0
        self.total: int | None = None
        self.records = 0
        self.retries = 0
        self.rate_limited = 0
        self.failed = 0
        self.fetched = 0
        self.fetched_records = 0
        self._clock = clock
        self._started = self._last_log = clock()

    def attach(self, bus: Bus) -> ProgressTracker:
        """Follow the events of ``bus`` from now on; returns self."""
        bus.subscribe(PageDone, self._page_done)
        bus.subscribe(UnitsKnown, self._units_known)
        bus.subscribe(Retrying, self._retrying)
        bus.subscribe(RequestDone, self._request_done)
        bus.subscribe(UnitFailed, self._failed)
        return self

    def snapshot(self, now: float | None = None) -> Progress:
        """The figures now."""
        elapsed = max((self._clock() if now is None else now) - self._started, 0.0)
        pages_per_s = self.fetched / elapsed if elapsed > 0 else 0.0
        records_per_s = self.fetched_records / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total is not None and pages_per_s > 0:
            eta = max(self.total - self.pages - self.failed, 0) / pages_per_s
        return Progress(self.pages, self.total, self.records, self.retries, self.rate_limited,
                        self.failed, elapsed, pages_per_s, records_per_s, eta)  # fmt: skip

    def _page_done(self, event: PageDone) -> None:
        self.pages += 1
        self.records += event.records
        if not event.replayed:
            self.fetched += 1
            self.fetched_records += event.records
        now = self._clock()
        snapshot = self.snapshot(now)
        if self.callback is not None:
            self.callback(snapshot)
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info(
                "progress: %d/%s pages, %d records, %.1f pages/s, %.0f records/s, ETA %s, "
                "%d retries, %d failed pages",
                snapshot.pages_done,
                snapshot.pages_total if snapshot.pages_total is not None else "?",
                snapshot.records,
                snapshot.pages_per_s,
                snapshot.records_per_s,
                format_eta(snapshot.eta_s),
                snapshot.retries,
                snapshot.failed_pages,
            )

    def _units_known(self, event: UnitsKnown) -> None:
        self.total = event.total

    def _retrying(self, event: Retrying) -> None:
        self.retries += 1

    def _request_done(self, event: RequestDone) -> None:
        if event.status == 429:
            self.rate_limited += 1

    def _failed(self, event: UnitFailed) -> None:
        self.failed += 1


def format_eta(seconds: float | None) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour), or ``?`` while unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
