"""ReqresClient: the library's face of a source, for code that wants pages, not a whole run.

A thin wrapper, not a second pipeline: it opens the source the settings describe (reqres
page numbers by default) with an ApiStats subscribed to its events. An ``httpx.AsyncClient``
can be injected, so tests use respx or a MockTransport without patching anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from types import TracebackType
from typing import Self

import httpx

from .errors import PageFetchError
from .observe import ApiStats, Bus
from .settings import Settings
from .sources import Page, PageSummary, Recorded, Source, StopSignal, Unit, open_source
from .sources.units import UNKNOWN

__all__ = ["ApiStats", "ReqresClient"]


class ReqresClient:
    """Async client for a paginated listing: ``async with ReqresClient(settings) as c``."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.bus = Bus()
        self.stats = ApiStats().attach(self.bus)
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._source: Source | None = None
        self._stack = contextlib.AsyncExitStack()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"ReqresClient(base_url={s.base_url!r}, concurrency={s.concurrency}, "
            f"rate_limit={s.rate_limit}, transport={s.transport!r})"
        )

    async def __aenter__(self) -> Self:
        self._source = await self._stack.enter_async_context(
            open_source(
                self.settings, self.bus, http=self._http, sleep=self._sleep, clock=self._clock
            )
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    @property
    def source(self) -> Source:
        """The source this client walks."""
        assert self._source is not None, "use ReqresClient as an async context manager"
        return self._source

    @property
    def failed_pages(self) -> dict[int, PageFetchError]:
        """The pages that failed for good, by number (``retried`` False: no retry fixes it)."""
        return self._source.failed if self._source is not None else {}

    @property
    def total_pages(self) -> int | None:
        """The number of pages of the walk, once known."""
        return self._source.total_units if self._source is not None else None

    def page_url(self, number: int) -> str:
        """The URL of one listing page, as shown in messages."""
        return self.source.paginator.request(Unit(number)).url

    async def fetch_page(self, number: int) -> Page:
        """Fetch one page, retrying transient failures; PageFetchError once retries run out.

        AuthError, BadRequestError, PageNotFoundError and other non-retryable ApiErrors are
        raised as they are, at once.
        """
        return await self.source.fetch(Unit(number))

    def incomplete_reasons(self) -> list[str]:
        """Why the pages iterated so far may not be all of them; empty when they are."""
        return self._source.incomplete_reasons() if self._source is not None else []

    async def iter_pages(
        self,
        *,
        skip: Collection[int] | Mapping[int, PageSummary] = (),
        stop: StopSignal | None = None,
    ) -> AsyncGenerator[Page, None]:
        """Yield the first page, then the others as they arrive (concurrently where possible).

        Pages in ``skip`` are not fetched (the first is always fetched, to learn the total,
        but not yielded when skipped); a mapping also says what each held, so a resumed
        walk ends where the first one did. ``incomplete_reasons()`` says afterwards if pages
        were left. A page that fails after its retries is recorded in ``failed_pages``; an
        error that no retry can fix (401, 400, a 404 on the first page) ends the iteration
        by raising it. Once ``stop`` is set no new page is started.
        """
        recorded = Recorded()
        if isinstance(skip, Mapping):
            recorded.summaries.update(skip)
        else:
            recorded.summaries.update(dict.fromkeys(skip, UNKNOWN))
        async with contextlib.aclosing(self.source.pages(recorded=recorded, stop=stop)) as pages:
            async for page in pages:
                yield page
