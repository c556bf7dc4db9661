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
        self._clock = clock
        self._last_log = clock()

    def attach(self, bus: Bus) -> ProgressTracker:
        """Follow the events of ``bus`` from now on; returns self."""
        bus.subscribe(PageDone, self._page_done)
        bus.subscribe(UnitsKnown, self._units_known)
        bus.subscribe(Retrying, self._retrying)
        bus.subscribe(RequestDone, self._request_done)
        bus.subscribe(UnitFailed, self._failed)
        return self

    def snapshot(self) -> Progress:
        """The figures now."""
        return Progress(self.pages, self.total, self.records, self.retries, self.rate_limited,
                        self.failed)  # fmt: skip

    def _page_done(self, event: PageDone) -> None:
        self.pages += 1
        self.records += event.records
        snapshot = self.snapshot()
        if self.callback is not None:
            self.callback(snapshot)
        now = self._clock()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info(
                "progress: %d/%s pages, %d records, %d retries, %d failed pages",
                snapshot.pages_done,
                snapshot.pages_total if snapshot.pages_total is not None else "?",
                snapshot.records,
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
