"""The source: a paginated listing walked unit by unit, fanned out where the API allows it.

Every unit goes through the fetcher (limits, retries, 429 pause); the paginator says what to
ask and what came back. After the first page, a paginator that can address every unit by
its number (page numbers, offsets, a Link header with ``rel="last"``) is fanned out over
``concurrency`` workers under a UnitPlan; any other is followed as a chain, one unit after
the other. A walk stops at an empty page, at the end of the chain, at a page that repeats
the one before, or at ``max_pages``; ``incomplete_reasons()`` says what may be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.streams.memory import MemoryObjectSendStream

from .._limits import MAX_PAGES
from .._streams import items, put
from ..errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BadRequestError,
    PageFetchError,
    ResponseTooLargeError,
)
from ..http import Fetcher, FetchPolicy, GaveUp, Response, clip, fetch_extras, make_transport
from ..http.failures import drop_frames
from ..observe import Bus, UnitFailed, UnitFetched, UnitsKnown
from ..settings import Settings
from .body import FieldMap, Records, field_map
from .paginators import ForeignNextError, Paginator, make_paginator
from .plan import UnitPlan
from .units import Page, PageSummary, Recorded, Shard, StopSignal, Unit

log = logging.getLogger("customer_pipeline.client")

# In a walk without a unit count, workers run at most this many units per worker ahead of
# the first unit not yet in (units past the end are fetched, then dropped).
WINDOW_PER_WORKER = 4


class Source:
    """One listing, fetched: ``async for page in source.pages()``, then the figures."""

    def __init__(
        self,
        paginator: Paginator,
        fetcher: Fetcher,
        bus: Bus,
        *,
        max_pages: int,
        concurrency: int,
        shape: FieldMap | None = None,
    ) -> None:
        self.paginator = paginator
        self.records = Records(paginator.body, shape)
        self.fetcher = fetcher
        self.bus = bus
        self.max_pages = max_pages
        self.concurrency = concurrency
        self.failed: dict[int, PageFetchError] = {}
        self._plan: UnitPlan | None = None
        self._reasons: list[str] = []
        self._total: int | None = None
        # Set to walk one shard of a fan-out (a cluster run); the planner checks the whole.
        self.shard: Shard | None = None
        self.walked = Walked()

    @property
    def total_units(self) -> int | None:
        """How many units the walk has, once known."""
        return self._total

    def reread(
        self, number: int, state: str | None, headers: dict[str, str] | None, body: bytes
    ) -> Page:
        """A page recorded before (by a checkpoint), read again as when it was fetched.

        Raises InvalidBodyError for a body that is not a listing, ValueError for a number no
        walk reaches.
        """
        first = self.paginator.first
        if not first <= number < first + MAX_PAGES:
            raise ValueError(f"no walk reaches it (pages {first} to {first + MAX_PAGES - 1})")
        unit = Unit(number, state)
        return self.paginator.read(unit, self.paginator.request(unit).url, headers or {}, body)

    async def fetch(self, unit: Unit) -> Page:
        """Fetch one unit, retrying transient failures; PageFetchError once retries run out.

        AuthError, BadRequestError, PageNotFoundError and other non-retryable ApiErrors are
        raised as they are, at once.
        """
        request = self.paginator.request(unit)
        read = self.paginator.read

        def accept(response: Response) -> Page:
            return read(unit, request.url, response.headers, response.body)

        try:
            page = await self.fetcher.fetch(request, accept)
        except httpx.InvalidURL as exc:  # a next URL or cursor no request can carry
            raise PageFetchError(f"{request.what} cannot be requested: {exc} "
                                 f"({clip(request.url, 120)})", page=unit.number,
                                 url=clip(request.url, 200), cause=str(exc),
                                 retried=False) from None  # fmt: skip
        except GaveUp as exc:
            n = exc.attempts
            fix = f"; {exc.hint}" if exc.hint else ""
            message = (f"{request.what} failed after {n} attempt{'s' * (n > 1)}: {exc.cause}"
                       f"{fix} ({request.url})")  # fmt: skip
            first = unit.number == self.paginator.first and unit.state is None
            error_type = ApiUnreachableError if first else PageFetchError
            raise error_type(message, page=unit.number, url=request.url, cause=exc.cause) from None
        self.bus.emit(UnitFetched(unit.number, len(page.records)))
        return page

    async def pages(
        self, *, recorded: Recorded | None = None, stop: StopSignal | None = None
    ) -> AsyncGenerator[Page, None]:
        """Yield the walk's pages as they arrive: the first, then the rest.

        Pages in ``recorded`` (a checkpoint's) are not fetched again: a fan-out fetches the
        first unit again to learn the count but yields only the others; a chain goes on
        from the last recorded page. A unit that fails after its retries is recorded in
        ``failed``: a fan-out goes on with the others, a chain ends there. An error that no
        retry can fix (401, 400, a 404 on the first unit) ends the iteration by raising it.
        Once ``stop`` is set no new unit is started; the iteration ends when those in
        flight are in.
        """
        recorded = recorded if recorded is not None else Recorded()
        if recorded.complete:
            self._known(recorded.total)
            return
        paginator = self.paginator
        if self.shard is not None:
            walk = self._fan_out(self.shard.first, recorded, stop)
        elif paginator.chain_only and recorded.last is not None:
            walk = self._chain(recorded.last, stop, recorded.reported, recorded.size)
        else:
            first = await self.fetch(Unit(paginator.first))
            if paginator.random_access(first):
                walk = self._fan_out(first, recorded, stop)
            elif recorded.last is not None:
                walk = self._chain(recorded.last, stop, recorded.reported, recorded.size)
            else:
                yield first
                walk = self._chain(first, stop, first.total_records, len(first.records))
        # Closed here, not by the garbage collector: a fan-out's workers stop at once.
        async with contextlib.aclosing(walk):
            async for page in walk:
                yield page

    def incomplete_reasons(self) -> list[str]:
        """Why the units walked so far may not be all of them; empty when they are."""
        reasons = failure_reasons(self.failures())
        if self._plan is not None:
            reasons += self._plan.incomplete_reasons()
        return reasons + self._reasons

    def failures(self) -> dict[int, str | None]:
        """Each failed unit: None if it failed after every retry, else what no retry fixes."""
        return {n: None if e.retried else _no_retry_fixes(e) for n, e in self.failed.items()}

    def other_reasons(self) -> list[str]:
        """incomplete_reasons() but for the failed units (a shard's, for the planner)."""
        plan = self._plan.incomplete_reasons() if self._plan is not None else []
        return plan + self._reasons

    @property
    def not_retried(self) -> list[int]:
        """The failed units whose answer no retry fixes (a redirect, a 404...), by number."""
        return sorted(n for n, error in self.failed.items() if not error.retried)

    # -- a chain ---------------------------------------------------------------------------

    async def _chain(
        self, page: Page, stop: StopSignal | None, reported: int | None, seen: int | None
    ) -> AsyncGenerator[Page, None]:
        """The units after ``page``, one after the other, until the chain ends.

        ``reported`` is the record count the first page gave, ``seen`` the records of the
        pages up to ``page`` (None: not known), checked at the end as for a fan-out.
        """
        first = self.paginator.first
        # The cursors or URLs followed so far: a server that sends one again loops (A, B, A).
        followed = {page.state} if page.state is not None else set()
        while page.records:  # an empty page ends the walk
            try:
                unit = self.paginator.follows(page)
            except ForeignNextError as exc:
                log.warning("%s", exc)
                self._reasons.append(str(exc))
                return
            if unit is None:
                break
            if unit.state in followed:
                reason = (f"page {page.number} names a next page the walk already followed "
                          f"({clip(str(unit.state), 80)}): the API loops, so the walk stops "
                          "there and pages past the loop may be missing")  # fmt: skip
                log.warning("%s", reason)
                self._reasons.append(reason)
                break
            if unit.state is not None:
                followed.add(unit.state)
            if unit.number - first + 1 > self.max_pages:
                self._reasons.append(
                    f"page {page.number} (max_pages) has a next page: more pages may follow; "
                    "raise --max-pages"
                )
                return
            if stop is not None and stop.is_set():
                return
            try:
                following = await self.fetch(unit)
            except Exception as exc:
                if not self._failed(unit.number, exc):
                    raise
                resume = "; --resume goes on from there" if self.failed[unit.number].retried else ""
                self._reasons.append(f"the walk stopped at page {unit.number}, which failed: the "
                                     f"pages after it were not reached{resume}")  # fmt: skip
                return
            if _same_records(following, page):
                if page.number == first:  # no clamp: the second page is the first again
                    self._reasons.append(_ignored(following.number, page.number))
                break  # a server that clamps past the end: the walk is over
            yield following
            page = following
            if seen is not None:
                seen += len(following.records)
        if not page.records and page.next is not None:
            log.info("page %d is empty: the walk ends there, though it names a next page",
                     page.number)  # fmt: skip
        self._known(page.number - first + (1 if page.records else 0))
        self._check_count(reported, seen, page.number - first + 1)

    # -- a fan-out -------------------------------------------------------------------------

    async def _fan_out(
        self, first: Page, recorded: Recorded, stop: StopSignal | None
    ) -> AsyncGenerator[Page, None]:
        """The first page, then the others from ``concurrency`` workers, as they arrive."""
        skip = recorded.summaries
        concurrency = self.concurrency
        shard = self.shard
        plan = UnitPlan(first, skip, self.max_pages, stop, window=WINDOW_PER_WORKER * concurrency,
                        units=None if shard is None else (shard.lo, shard.hi))  # fmt: skip
        self._plan = plan
        self._known(plan.known_total)
        send, receive = anyio.create_memory_object_stream[Page | BaseException](
            max_buffer_size=concurrency
        )
        workers = [
            asyncio.create_task(self._worker(plan, send.clone()))
            for _ in range(min(concurrency, plan.remaining()))
        ]
        send.close()
        seen = 0  # records in the walk's pages, to check against the count the API reports
        short: list[int] = []  # pages with fewer records than a page holds
        last = first.number if first.records else 0  # the last page with records
        if 0 < len(first.records) < self.paginator.page_size:
            short.append(first.number)
        try:
            if first.number not in skip and (shard is None or first.number in shard):
                seen += len(first.records)
                yield first
            async with receive:
                async for item in items(receive):
                    if isinstance(item, BaseException):
                        raise item
                    seen += len(item.records)
                    if item.number == first.number + 1 and _same_records(item, first):
                        self._reasons.append(_ignored(item.number, first.number))
                    if item.records:
                        last = max(last, item.number)
                        if len(item.records) < self.paginator.page_size:
                            short.append(item.number)
                    yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._known(plan.known_total)
        if shard is not None:  # only the planner sees the whole walk: it checks it
            if first.number not in shard:
                short = [n for n in short if n != first.number]
            self.walked = Walked(short, last if last in shard else 0)
            return
        self._check_records(first, plan, seen, skip)
        if reason := self.short_page_reason(short, last):
            self._reasons.append(reason)

    def short_page_reason(self, short: list[int], last: int) -> str | None:
        """Why an offset walk whose ``short`` pages come before its ``last`` one lost records."""
        early = [n for n in short if n < last]
        if self.paginator.name != "offset" or not early:
            return None
        # Offsets step by the page size: a short page with records after it means the
        # server serves fewer than a step, and the records between were never asked for.
        return (
            f"page {early[0]} held fewer records than the page size "
            f"({self.paginator.page_size}) though later pages had records: the API caps "
            "its page size, so offsets skipped records; set --per-page to what it serves "
            "(with --restart)"
        )

    def _check_records(
        self, first: Page, plan: UnitPlan, seen: int, skip: Mapping[int, PageSummary]
    ) -> None:
        """A walk that ended well but holds fewer records than the API reports is incomplete.

        The safety net under the page size: a server that serves fewer records per page than
        asked, without a sign on its first page, would otherwise lose records silently.
        """
        reported = first.total_records
        stopped = plan.stop is not None and plan.stop.is_set()
        if reported is None or stopped or self.failed or plan.incomplete_reasons():
            return
        for number in range(first.number, plan.last + 1):
            if number in skip and number != first.number:
                size = skip[number].size
                if size is None:
                    return  # a recorded page of unknown size: nothing to check against
                seen += size
        if first.number in skip:
            seen += len(first.records)
        self._check_count(reported, seen, plan.last - first.number + 1)

    def _check_count(self, reported: int | None, seen: int | None, pages: int) -> None:
        """A walk with fewer records than the API reported (and no other reason) is incomplete."""
        if reported is None or seen is None or self.failed or self._reasons or seen >= reported:
            return
        self._reasons.append(short_count_reason(reported, seen, pages))

    async def _worker(
        self, plan: UnitPlan, send: MemoryObjectSendStream[Page | BaseException]
    ) -> None:
        async with send:
            while (number := await plan.claim()) is not None:
                try:
                    page = await self.fetch(Unit(number))
                except Exception as exc:
                    if not self._failed(number, exc):
                        await send.send(exc)
                        return
                    released = plan.failed(number)
                else:
                    released = plan.arrived(page)
                self._known(plan.known_total)
                for ready in released:
                    await put(send, ready)

    # -- bookkeeping -----------------------------------------------------------------------

    def _failed(self, number: int, exc: Exception) -> bool:
        """Record a unit that failed for good; False if ``exc`` must end the whole walk."""
        if isinstance(exc, PageFetchError):
            error = exc
        elif isinstance(exc, ApiError) and not isinstance(exc, AuthError | BadRequestError):
            # Not fixable by retrying (a 404 or 501 for one unit, a body too large), but
            # not the whole run's problem either.
            error = PageFetchError(str(exc), page=number, url=exc.url, cause=str(exc),
                                   retried=False)  # fmt: skip
            error.__cause__ = exc  # what _no_retry_fixes reads: the status, the kind
        else:
            return False
        log.warning("%s", error)
        drop_frames(error)
        self.failed[number] = error
        self.bus.emit(UnitFailed(number, error.cause))
        return True

    def _known(self, total: int | None) -> None:
        if total != self._total:
            self._total = total
            self.bus.emit(UnitsKnown(total))


@dataclass(frozen=True)
class Walked:
    """What one shard's walk saw, for the planner's checks of the whole walk.

    ``short``: pages holding fewer records than a page holds; ``last``: its last page with
    records (0: none).
    """

    short: list[int] = field(default_factory=list)
    last: int = 0


def failure_reasons(failures: Mapping[int, str | None]) -> list[str]:
    """What the failed units (see Source.failures) leave missing, grouped by answer."""
    reasons = []
    retried = sorted(n for n, answer in failures.items() if answer is None)
    if retried:
        reasons.append(f"pages [{_listed(retried)}] failed after every retry")
    answers: dict[str, list[int]] = {}
    for number in sorted(failures):
        if (answer := failures[number]) is not None:
            answers.setdefault(answer, []).append(number)
    for answer, numbers in answers.items():
        pages = f"page {numbers[0]}" if len(numbers) == 1 else f"pages [{_listed(numbers)}]"
        reasons.append(f"{pages} {answer}")
    return reasons


def short_count_reason(reported: int, seen: int, pages: int) -> str:
    """Why a walk whose pages held fewer records than the API reports is incomplete."""
    return (
        f"the API reports {reported} records but its {pages} pages held {seen}: it may "
        "serve fewer records per page than asked, or end its walk early; try a smaller "
        "--per-page (with --restart)"
    )


def _listed(numbers: list[int]) -> str:
    """Page numbers for a message: the first 20, then how many more."""
    listed = ", ".join(map(str, numbers[:20]))
    if len(numbers) > 20:
        listed += f", ... ({len(numbers) - 20} more)"
    return listed


def _no_retry_fixes(error: PageFetchError) -> str:
    """What a unit that failed without retries answered, and what can fix it."""
    answer = error.__cause__
    status = answer.status if isinstance(answer, ApiError) else None
    if isinstance(answer, ResponseTooLargeError):
        return "answered more than max_response_bytes: raise --max-response-bytes, then --resume"
    if status is not None and 300 <= status < 400:
        return f"answered HTTP {status} (redirects are not followed), which no retry fixes"
    if status == 404:
        return "answered HTTP 404 (not found), which no retry fixes"
    if status is not None and status != 200:
        return f"answered HTTP {status}, which no retry fixes"
    return f"failed ({error.cause[:200]}), which no retry fixes"


def _ignored(number: int, before: int) -> str:
    """The reason for a walk whose second page is its first again."""
    return (f"page {number} holds the same records as page {before}: the API seems to ignore "
            "the paging parameter; check --paginator and its parameter names (--page-param, "
            "--offset-param, --cursor-param, --first-page)")  # fmt: skip


def _same_records(page: Page, before: Page) -> bool:
    """Whether ``page`` holds exactly the records of the page before it."""
    try:
        return page.records == before.records
    except RecursionError:  # nested deeper than Python compares: not a clamped repeat
        return False


@contextlib.asynccontextmanager
async def open_source(
    settings: Settings,
    bus: Bus,
    *,
    http: httpx.AsyncClient | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Source]:
    """The source the settings describe, on ``http`` (or a transport of its own, closed after)."""
    client = http if http is not None else make_transport(settings)
    try:
        async with fetch_extras(settings) as (limiter, cache):
            fetcher = Fetcher(client, FetchPolicy.from_settings(settings), bus,
                              api_key=settings.api_key.get_secret_value(),
                              key_origin=settings.base_url, sleep=sleep, clock=clock,
                              limiter=limiter, cache=cache)  # fmt: skip
            yield Source(make_paginator(settings), fetcher, bus, max_pages=settings.max_pages,
                         concurrency=settings.concurrency, shape=field_map(settings))  # fmt: skip
    finally:
        if http is None:
            await client.aclose()
