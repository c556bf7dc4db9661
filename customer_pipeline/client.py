"""The concurrent, polite reqres client: paging, limits, retries, Retry-After.

Policy lives here; I/O is httpx's (see ``transport``). An ``httpx.AsyncClient`` can be
injected, so tests use respx or a MockTransport without patching anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
import backoff
import httpx
from aiolimiter import AsyncLimiter
from anyio.streams.memory import MemoryObjectSendStream

from ._streams import items, put
from .errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BadRequestError,
    InvalidBodyError,
    PageFetchError,
    PageNotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    RetryableError,
)
from .paging import (
    NOT_A_LISTING,
    Page,
    PagePlan,
    PageSummary,
    StopSignal,
    clip,
    parse_envelope,
    parse_retry_after,
)
from .settings import Settings
from .transport import DEFAULT_HEADERS, BodyDecoder, HostNotFoundError, make_http_client

log = logging.getLogger("customer_pipeline.client")

USERS_PATH = "/api/users"
BURST_SECONDS = 0.02
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Transient failures below the HTTP layer. aiohttp errors are mapped to httpx's by the
# transport, but not all of them, so they are listed too.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TransportError,
    aiohttp.ClientError,
    TimeoutError,
)
RETRYABLE: tuple[type[Exception], ...] = (RetryableError, *TRANSPORT_ERRORS)


class DeadlineExceeded(TimeoutError):
    """An attempt took longer than ``timeout`` from connect to last byte; retried."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no complete response within {seconds:g}s (--timeout bounds the whole request, "
            "connect to last byte)"
        )


# A name that does not resolve gets one more try (a resolver's blip), not the whole budget.
DNS_RETRIES = 1
# In a walk without a page count, workers run at most this many pages per worker ahead of
# the first page not yet in (pages past the end are fetched, then dropped).
WINDOW_PER_WORKER = 4


@dataclass
class ApiStats:
    """What talking to the API cost in one run."""

    requests: int = 0
    successes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0
    limiter_wait_s: float = 0.0
    retry_after_wait_s: float = 0.0
    bytes_received: int = 0
    pages_fetched: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures_by_status": dict(sorted(self.failures.items())),
            "retries": self.retries,
            "rate_limited_429": self.rate_limited,
            "rate_limit_wait_s": _seconds(self.limiter_wait_s),
            "retry_after_wait_s": _seconds(self.retry_after_wait_s),
            "bytes_received": self.bytes_received,
            "pages_fetched": self.pages_fetched,
            "max_in_flight": self.max_in_flight,
        }


def _seconds(value: float) -> float:
    """Rounded to the millisecond, never below zero, never -0.0 (clock readings jitter)."""
    return round(max(value, 0.0), 3) + 0.0


def _make_limiter(rate: float) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests/s with a burst of 2% of a second (at least 1).

    A burst of exactly 1 loses ~10% of the rate to timer wake-up latency at 100/s; 2% of a
    second's worth keeps any one-second window within 2% of the limit.
    """
    if rate <= 0:
        return None
    burst = max(1.0, rate * BURST_SECONDS)
    return AsyncLimiter(burst, burst / rate)


class ReqresClient:
    """Async client for a reqres-style listing: ``async with ReqresClient(settings) as c``."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stats = ApiStats()
        self.failed_pages: dict[int, PageFetchError] = {}
        self.total_pages: int | None = None
        self._plan: PagePlan | None = None
        self._http = http
        self._owns_http = http is None
        self._sleep = sleep
        self._clock = clock
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._limiter = _make_limiter(settings.rate_limit)
        self._paused_until = 0.0
        self._in_flight = 0
        self._url = settings.base_url + USERS_PATH
        self._headers = httpx.Headers(
            {**DEFAULT_HEADERS, "x-api-key": settings.api_key.get_secret_value()}
        )
        self._timeout = httpx.Timeout(settings.timeout).as_dict()
        # httpx's timeouts are per read: a byte a second never trips them. This one bounds
        # the whole attempt, connect to last byte.
        self._deadline = settings.timeout

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"ReqresClient(base_url={s.base_url!r}, concurrency={s.concurrency}, "
            f"rate_limit={s.rate_limit}, transport={s.transport!r})"
        )

    async def __aenter__(self) -> Self:
        if self._http is None:
            self._http = make_http_client(self.settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def page_url(self, number: int) -> str:
        """The URL of one listing page, as shown in messages."""
        return f"{self._url}?page={number}&per_page={self.settings.per_page}"

    # -- one page, with retries ------------------------------------------------------------

    async def fetch_page(self, number: int) -> Page:
        """Fetch one page, retrying transient failures; PageFetchError once retries run out.

        AuthError, BadRequestError, PageNotFoundError and other non-retryable ApiErrors are
        raised as they are, at once.
        """
        try:
            page = await self._attempt(number)
        except RETRYABLE as first_failure:
            # Most pages succeed at once; only failures pay for the retry machinery.
            page = await self._retry(number, first_failure)
        self.stats.pages_fetched += 1
        return page

    def incomplete_reasons(self) -> list[str]:
        """Why the pages iterated so far may not be all of them; empty when they are."""
        reasons = []
        if self.failed_pages:
            failed = sorted(self.failed_pages)
            listed = ", ".join(map(str, failed[:20]))
            if len(failed) > 20:
                listed += f", ... ({len(failed) - 20} more)"
            reasons.append(f"pages [{listed}] failed after every retry")
        if self._plan is not None:
            reasons += self._plan.incomplete_reasons()
        return reasons

    async def _retry(self, number: int, failure: BaseException) -> Page:
        """Retry a page after ``failure``, as the README's "Errors and retries" states."""
        s = self.settings
        page: Page | None = None
        pending: BaseException | None = failure
        attempts = 0
        dns_failures = 0

        def give_up(exc: BaseException) -> bool:
            nonlocal dns_failures
            dns_failures += isinstance(exc, HostNotFoundError)
            return dns_failures > DNS_RETRIES

        try:
            async for attempt in backoff.aretry_context(
                RETRYABLE,
                backoff.expo,
                max_tries=s.max_retries + 1,
                jitter=backoff.full_jitter,
                giveup=give_up,
                on_backoff=lambda details: self._on_backoff(number, details),
                logger=None,
                factor=s.backoff_base,
                max_value=s.backoff_max,
            ):
                attempts += 1
                with attempt:
                    if pending is not None:  # the first attempt, already made
                        error, pending = pending, None
                        raise error
                    page = await self._attempt(number)
        except RETRYABLE as exc:
            cause = _describe(exc)
            fix = "; check --base-url" if isinstance(exc, HostNotFoundError) else ""
            message = (
                f"page {number} failed after {attempts} attempt{'s' * (attempts > 1)}: {cause}"
                f"{fix} ({self.page_url(number)})"
            )
            error_type = ApiUnreachableError if number == 1 else PageFetchError
            raise error_type(message, page=number, url=self.page_url(number), cause=cause) from exc
        assert page is not None
        return page

    def _on_backoff(self, number: int, details: Any) -> None:
        self.stats.retries += 1
        exc = details.get("exception")
        if exc is not None:
            # It lives on through the wait; its frames would keep the body it could not use.
            _drop_frames(exc)
        wait = float(details.get("wait", 0.0))
        if isinstance(exc, RateLimitedError):
            # Every worker waits, not just the one that was told.
            pause = exc.retry_after if exc.retry_after is not None else wait
            pause = min(pause, self.settings.backoff_max)
            now = self._clock()
            until = now + pause
            if until > self._paused_until:
                self.stats.retry_after_wait_s += until - max(self._paused_until, now)
                self._paused_until = until
        log.info(
            "page %d: retry %d in %.2fs after %s",
            number,
            int(details.get("tries", 0)),
            wait,
            _describe(exc),
        )

    async def _wait_if_paused(self) -> None:
        while (delay := self._paused_until - self._clock()) > 0:
            await self._sleep(delay)

    async def _attempt(self, number: int) -> Page:
        assert self._http is not None, "use ReqresClient as an async context manager"
        await self._wait_if_paused()
        s = self.settings
        async with self._semaphore:
            if self._limiter is not None:
                started = time.monotonic()
                await self._limiter.acquire()
                self.stats.limiter_wait_s += time.monotonic() - started
            # A 429 seen by another worker while this one queued still applies.
            await self._wait_if_paused()
            self._in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
            self.stats.requests += 1
            try:
                request = httpx.Request(
                    "GET",
                    f"{self._url}?page={number}&per_page={s.per_page}",
                    headers=self._headers,
                    extensions={"timeout": self._timeout},
                )
                deadline = asyncio.timeout(self._deadline)
                try:
                    async with deadline:
                        response = await self._http.send(request, stream=True)
                        try:
                            status = response.status_code
                            body = await self._read_body(response, number) if status == 200 else b""
                        finally:
                            await response.aclose()
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise DeadlineExceeded(self._deadline) from None
            except TRANSPORT_ERRORS as exc:
                key = "deadline" if isinstance(exc, DeadlineExceeded) else type(exc).__name__
                self.stats.failures[key] += 1
                raise
            finally:
                self._in_flight -= 1
        return self._page_from_response(number, status, response.headers, body)

    async def _read_body(self, response: httpx.Response, number: int) -> bytes:
        """The body, inflated as it streams and refused as soon as it passes the limit."""
        limit = self.settings.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            self._too_large(number, int(declared))
        if response.is_stream_consumed:  # read before us (respx's httpx mocker): decoded
            body = response.content
            if len(body) > limit:
                self._too_large(number, len(body))
            self.stats.bytes_received += len(body)
            return body
        try:
            decoder = BodyDecoder.for_header(response.headers.get("content-encoding"))
        except ValueError as exc:
            raise ApiError(f"page {number}: {exc} ({self.page_url(number)})",
                           url=self.page_url(number), status=200) from None  # fmt: skip
        chunks: list[bytes] = []
        size = wire = 0
        try:
            async for chunk in response.aiter_raw():
                wire += len(chunk)
                if decoder is not None:
                    # Never more than the limit out of one piece: a bomb's 64 KB is 64 MB.
                    chunk = decoder.decode(chunk, limit + 1 - size)
                size += len(chunk)
                if size > limit or wire > limit:
                    # The error's traceback keeps this frame, so these bytes, alive a while.
                    chunks.clear()
                    chunk = b""
                    self._too_large(number, size, decoder, wire)
                chunks.append(chunk)
            if decoder is not None and not decoder.complete:
                raise zlib.error("the stream ends before its end marker")
        except zlib.error as exc:
            self.stats.failures["invalid_body"] += 1
            url = self.page_url(number)
            raise InvalidBodyError(
                f"{NOT_A_LISTING}{url} is a corrupt {decoder.encoding if decoder else ''} "
                f"stream ({exc})",
                url=url,
                status=200,
            ) from None
        self.stats.bytes_received += wire
        return b"".join(chunks)

    def _too_large(
        self, number: int, size: int, decoder: BodyDecoder | None = None, wire: int = 0
    ) -> None:
        self.stats.failures["too_large"] += 1
        limit = f"max_response_bytes={self.settings.max_response_bytes}"
        if decoder is None:
            what = f"response of {size} bytes or more exceeds {limit}"
        else:
            what = (
                f"{decoder.encoding} response inflates to more than {limit} from {wire} bytes "
                "on the wire (a compression bomb?)"
            )
        raise ResponseTooLargeError(
            f"page {number}: {what} ({self.page_url(number)})",
            url=self.page_url(number),
            status=200,
        )

    def _page_from_response(
        self, number: int, status: int, headers: httpx.Headers, body: bytes
    ) -> Page:
        url = self.page_url(number)
        if status == 200:
            try:
                records, total_pages = parse_envelope(
                    body, url=url, per_page=self.settings.per_page
                )
            except InvalidBodyError:
                self.stats.failures["invalid_body"] += 1
                raise
            self.stats.successes += 1
            return Page(number, records, total_pages, body)
        self.stats.failures[str(status)] += 1
        if status == 429:
            self.stats.rate_limited += 1
            retry_after = parse_retry_after(headers.get("retry-after"))
            raise RateLimitedError(
                f"429 Too Many Requests from {url}", url=url, retry_after=retry_after
            )
        if status in RETRY_STATUSES:
            raise RetryableError(f"HTTP {status} from {url}", url=url, status=status)
        if status in (401, 403):
            raise AuthError(
                f"API key missing or invalid (HTTP {status} from {url}): "
                "set CUSTOMER_PIPELINE_API_KEY or pass --api-key",
                url=url,
                status=status,
            )
        if status == 400:
            raise BadRequestError(
                f"HTTP 400 Bad Request from {url}: check --per-page and --base-url",
                url=url,
                status=status,
            )
        if status == 404:
            raise PageNotFoundError(
                f"HTTP 404 for listing page {number} at {url}: "
                "check --base-url points at a reqres-style API",
                url=url,
                status=status,
            )
        if 300 <= status < 400:
            target = clip(headers.get("location", "?"))
            raise ApiError(
                f"HTTP {status} redirect from {url} to {target}: redirects are not followed "
                "(the API key must not travel); set --base-url to the final address",
                url=url,
                status=status,
            )
        raise ApiError(f"unexpected HTTP {status} from {url}", url=url, status=status)

    # -- every page ------------------------------------------------------------------------

    async def iter_pages(
        self,
        *,
        skip: Collection[int] | Mapping[int, PageSummary] = (),
        stop: StopSignal | None = None,
    ) -> AsyncIterator[Page]:
        """Yield page 1, then the other pages of the walk as they arrive (concurrently).

        Pages in ``skip`` are not fetched (page 1 is always fetched, to learn the total, but
        not yielded when skipped); a mapping also says what each held, so a resumed walk
        ends where the first one did. Which pages make the walk, whatever the concurrency,
        is PagePlan's rule; ``incomplete_reasons()`` says afterwards if pages were left. A
        page that fails after its retries is recorded in ``failed_pages`` and the others go
        on; an error that no retry can fix (401, 400, a 404 on page 1) ends the iteration by
        raising it. Once ``stop`` is set no new page is started; the iteration ends when the
        pages in flight are in.
        """
        first = await self.fetch_page(1)
        concurrency = self.settings.concurrency
        plan = PagePlan(first, skip, self.settings.max_pages, stop,
                        window=WINDOW_PER_WORKER * concurrency)  # fmt: skip
        self._plan = plan
        self.total_pages = plan.known_total
        send, receive = anyio.create_memory_object_stream[Page | BaseException](
            max_buffer_size=concurrency
        )
        workers = [
            asyncio.create_task(self._worker(plan, send.clone()))
            for _ in range(min(concurrency, plan.remaining()))
        ]
        send.close()
        try:
            if 1 not in skip:
                yield first
            async with receive:
                async for item in items(receive):
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.total_pages = plan.known_total

    async def _worker(
        self, plan: PagePlan, send: MemoryObjectSendStream[Page | BaseException]
    ) -> None:
        async with send:
            while (number := await plan.claim()) is not None:
                try:
                    page = await self.fetch_page(number)
                except PageFetchError as exc:
                    log.warning("%s", exc)
                    self.failed_pages[number] = _without_frames(exc)
                    released = plan.failed(number)
                except Exception as exc:
                    if not isinstance(exc, ApiError) or isinstance(
                        exc, AuthError | BadRequestError
                    ):
                        await send.send(exc)
                        return
                    # Not fixable by retrying (a 404 or 501 for one page, a body too large),
                    # but not the whole run's problem either.
                    log.warning("page %d failed: %s", number, exc)
                    self.failed_pages[number] = _without_frames(
                        PageFetchError(str(exc), page=number, url=exc.url, cause=str(exc))
                    )
                    released = plan.failed(number)
                else:
                    released = plan.arrived(page)
                self.total_pages = plan.known_total
                for ready in released:
                    await put(send, ready)


def _drop_frames(error: BaseException) -> None:
    """Forget the tracebacks of ``error`` and its causes: their frames hold bodies."""
    link: BaseException | None = error
    while link is not None:
        link.__traceback__ = None
        link = link.__cause__ or link.__context__


def _without_frames(error: PageFetchError) -> PageFetchError:
    """``error``, to keep until the run's end, without its tracebacks."""
    _drop_frames(error)
    return error


def _describe(exc: BaseException | None) -> str:
    """A short, key-free description of a failure; foreign text is cut to ~200 characters."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, InvalidBodyError):
        # "the response from <url> is <what>": the url is in the message around this one.
        return clip(str(exc).removeprefix(NOT_A_LISTING + exc.url + " is "))
    if isinstance(exc, RateLimitedError):
        after = f", Retry-After {exc.retry_after:g}s" if exc.retry_after is not None else ""
        return f"HTTP 429{after}"
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status}" if exc.status else clip(str(exc))
    if isinstance(exc, HostNotFoundError | DeadlineExceeded):
        return str(exc)
    text = clip(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
