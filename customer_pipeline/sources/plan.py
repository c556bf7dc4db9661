"""Which unit to fetch next in a fan-out, which fetched units belong to the walk, what was left.

Pure bookkeeping, no I/O: the source's workers claim units from a UnitPlan and hand back what
they fetched; the plan says which pages are released, in what order, and when the walk ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from .units import UNKNOWN, Page, PageSummary, StopSignal, digest

log = logging.getLogger("customer_pipeline.paging")


class UnitPlan:
    """Units ``first``, ``first + 1``...: which to fetch, which belong to the walk, what is left.

    A unit count the API reports (the first unit's, or a larger one from a later unit) is
    trusted up to ``max_pages``: those units are fetched in any order, released as they
    arrive, and an empty page among them ends nothing. Without a trusted count (none given,
    or one above ``max_pages``, which may be bogus: 10**9 must not cost 10**9 requests) the
    walk ends at the first empty page, or at a page that repeats the one before (a server
    that clamps past the end), and never passes ``max_pages``. Then pages are released in
    order, so a unit claimed past the end is dropped whatever the concurrency, and no worker
    claims more than ``window`` units past the first one not yet in (bounded memory).
    ``units`` (lo, hi) confines a counted walk to one shard: only those units are claimed.
    """

    def __init__(
        self,
        first: Page,
        skip: Collection[int] | Mapping[int, PageSummary],
        max_pages: int,
        stop: StopSignal | None = None,
        *,
        window: int,
        units: tuple[int, int | None] | None = None,
    ) -> None:
        self.start = first.number
        self.max_pages = max_pages
        self.stop = stop
        self.window = window
        self.count: int | None = None  # the largest trusted unit count seen
        self.reported: int | None = None  # the largest unit count seen, trusted or not
        self.end: int | None = None  # the unit that ended an uncounted walk
        self.end_repeated = False  # it repeated the page before (else it was empty)
        self._skip = skip
        self._summaries = skip if isinstance(skip, Mapping) else {}
        self._next = self.start + 1 if units is None else max(self.start + 1, units[0])
        self._hi = None if units is None else units[1]
        self._frontier = self.start + 1  # the first unit not yet released (ordered walks)
        self._held: dict[int, Page | None] = {}
        self._previous: int | None = None  # the digest of the last page released in order
        self._warned = False
        self._moved = asyncio.Event()
        self._observe(first.number, PageSummary(not first.records, first.total_pages))
        self.ordered = self.count is None
        if self.ordered:
            self._previous = digest(first.records)
            self._release()  # past the units recorded before, or no worker could claim
        else:
            for number, summary in self._summaries.items():
                self._observe(number, summary)

    @property
    def last(self) -> int:
        """The number of the walk's (or the shard's) last unit, as far as is known now."""
        if self.count is not None:
            last = self.start + self.count - 1
        elif self.end is not None:
            last = self.end
        else:
            last = self.start + self.max_pages - 1
        return last if self._hi is None else min(last, self._hi)

    @property
    def known_total(self) -> int | None:
        """The number of units, once known: a trusted count, or the units before the end."""
        if self.count is not None:
            return self.count
        return None if self.end is None else self.end - self.start

    def remaining(self) -> int:
        """Units still to claim, at most."""
        return max(0, self.last - self._next + 1)

    async def claim(self) -> int | None:
        """The next unit to fetch, or None when there is none (or a stop was asked)."""
        while True:
            if self.stop is not None and self.stop.is_set():
                return None  # asked to stop: no new units, in-flight ones finish
            while self._next <= self.last and self._next in self._skip:
                self._next += 1
            number = self._next
            if number > self.last:
                return None
            if not self.ordered or number < self._frontier + self.window:
                self._next += 1
                return number
            moved = self._moved
            await moved.wait()

    def arrived(self, page: Page) -> list[Page]:
        """Take a fetched page; returns the pages now released, in the walk, to yield."""
        if not self.ordered:
            self._observe(page.number, PageSummary(not page.records, page.total_pages))
            return [page] if page.number <= self.last else []
        self._held[page.number] = page
        return self._release()

    def failed(self, number: int) -> list[Page]:
        """Note a unit that failed for good; returns the pages that may now be released."""
        if not self.ordered:
            return []
        self._held[number] = None
        return self._release()

    def _release(self) -> list[Page]:
        """Walk the frontier over every unit that is in, in order, up to the end."""
        released: list[Page] = []
        start = self._frontier
        while self._frontier <= self.last:
            number = self._frontier
            if number in self._held:
                page = self._held.pop(number)
                if page is None:
                    summary = UNKNOWN
                else:
                    summary = PageSummary(not page.records, page.total_pages, digest(page.records))
                    if not self._observe(number, summary):
                        released.append(page)
                    self._frontier += 1
                    continue
            elif number in self._skip:
                summary = self._summaries.get(number, UNKNOWN)
            else:
                break
            self._observe(number, summary)
            self._frontier += 1
        if self._frontier > self.last:
            self._held.clear()  # claimed past the end: dropped, never yielded
        if self._frontier != start:
            self._moved.set()
            self._moved = asyncio.Event()
        return released

    def _observe(self, number: int, summary: PageSummary) -> bool:
        """Learn from one unit of the walk; True if it repeats the page before (not kept)."""
        total = summary.total_pages
        if total is not None:
            if self.reported is None or total > self.reported:
                self.reported = total
            if total <= self.max_pages:
                if self.count is None or total > self.count:
                    self.count = total
            elif not self._warned:
                self._warned = True
                log.warning(
                    "the API reports %d pages, more than max_pages=%d: paging until the first "
                    "empty page, never past max_pages",
                    total,
                    self.max_pages,
                )
        repeats = False
        if self.count is None and self.end is None:
            repeats = summary.digest is not None and summary.digest == self._previous
            if summary.empty or repeats:
                self.end = number
                self.end_repeated = repeats
        self._previous = summary.digest
        return repeats

    def _how_it_ended(self) -> str:
        return f"repeated page {self.end - 1}" if self.end_repeated and self.end else "was empty"

    def incomplete_reasons(self) -> list[str]:
        """Why the walk, though it ended, may have left units unfetched (empty: it did not)."""
        if self.reported is not None and self.reported > self.max_pages:
            if self.end is None:
                return [f"the API reports {self.reported} pages; max_pages is {self.max_pages}"]
            return [
                f"the API reports {self.reported} pages (more than max_pages={self.max_pages}, "
                f"so not trusted), but page {self.end} {self._how_it_ended()}: paging stopped "
                "there"
            ]
        if self.count is None and self.end is None:
            return [
                f"page {self.last} (max_pages) was not empty and the API reports no page "
                "count: more pages may follow; raise --max-pages"
            ]
        if self.end_repeated and self.end == self.start + 1:
            # No clamp: the second page is the first again.
            return [
                f"page {self.end} holds the same records as page {self.start}: the API seems "
                "to ignore the paging parameter; check --paginator and its parameter names "
                "(--page-param, --offset-param, --first-page)"
            ]
        return []
