"""The fetcher: policy over bytes. A request in; status, headers and body out.

It holds what every request obeys, whatever it asks for: at most ``concurrency`` in flight and
``rate_limit`` per second, both across retries (pacing.py), retries with exponential backoff
and full jitter, the pause every worker takes after a 429 (Retry-After), the response size cap
(body.py), a deadline on the whole attempt and the status-to-error map (failures.py). It knows
no URL shapes and no envelopes: the caller's ``accept(response)`` reads the body, and may raise
a RetryableError (InvalidBodyError for a truncated 200) to have the attempt made again. Events
go to a Bus (observe); sleep and clock are injectable, so tests never wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import backoff
import httpx

from ..errors import (
    ApiError,
    InvalidBodyError,
    RateLimitedError,
    ResponseTooLargeError,
    RetryableError,
)
from ..observe import (
    Bus,
    CacheHit,
    CacheMiss,
    CacheRevalidated,
    LimiterWaited,
    NotRetried,
    RateLimited,
    RequestDone,
    RequestStarted,
    Retrying,
)
from ..settings import Settings
from .body import read_body
from .failures import (
    DNS_RETRIES,
    RETRYABLE,
    TRANSPORT_ERRORS,
    DeadlineExceeded,
    GaveUp,
    describe,
    drop_frames,
    failure_kind,
    status_error,
)
from .pacing import Limiter, Pacer, make_limiter
from .transport import DEFAULT_HEADERS, HostNotFoundError

if TYPE_CHECKING:
    from .cache import CachedAnswer, ResponseCache

log = logging.getLogger("customer_pipeline.client")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """What to fetch: a full URL (query included) and what it is for, as messages say it."""

    url: str
    what: str
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class Response:
    """A 200 as it came: the request it answers, the headers and the whole (inflated) body."""

    request: Request
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """The limits and the retry policy every request obeys."""

    # No defaults here: they are the settings' (FetchPolicy.from_settings(Settings())).
    concurrency: int
    rate_limit: float
    max_retries: int
    backoff_base: float
    backoff_max: float
    timeout: float
    max_response_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The policy a run's settings ask for."""
        return cls(
            concurrency=settings.concurrency,
            rate_limit=settings.rate_limit,
            max_retries=settings.max_retries,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
        )


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL, lower-cased as URLs compare."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class Fetcher:
    """Fetches requests under one policy, through a transport or a client lent to it."""

    def __init__(
        self,
        http: httpx.AsyncClient | httpx.AsyncBaseTransport,
        policy: FetchPolicy,
        bus: Bus,
        *,
        api_key: str,
        key_origin: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        limiter: Limiter | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        """``limiter`` replaces the local one that ``policy.rate_limit`` makes; ``cache``
        answers what it holds and keeps every accepted 200."""
        self.policy = policy
        self.bus = bus
        self._exchange: Callable[[httpx.Request], Awaitable[httpx.Response]]
        if isinstance(http, httpx.AsyncClient):  # a caller's client: its hooks and mocks apply
            self._exchange = functools.partial(http.send, stream=True)
        else:
            self._exchange = http.handle_async_request
        self._sleep = sleep
        self._clock = clock
        self._semaphore = asyncio.Semaphore(policy.concurrency)
        self._limiter: Limiter | None = (
            limiter if limiter is not None else make_limiter(policy.rate_limit)
        )
        pause = getattr(self._limiter, "pause", None)
        self._share_pause: Callable[[float], Awaitable[None]] | None = pause
        self.cache = cache
        self._paused_until = 0.0
        self._pacer = Pacer(policy.concurrency, policy.backoff_max, sleep=sleep, clock=clock)
        self._in_flight = 0
        # The key goes only to the origin it is for, whatever URL a caller hands in.
        self._key_prefix = origin_of(key_origin)
        self._keyed = httpx.Headers({**DEFAULT_HEADERS, "x-api-key": api_key})
        self._plain = httpx.Headers(DEFAULT_HEADERS)
        self._timeout = httpx.Timeout(policy.timeout).as_dict()
        # httpx's timeouts are per read: a byte a second never trips them. This one bounds
        # the whole attempt, connect to last byte.
        self._deadline = policy.timeout

    def __repr__(self) -> str:
        p = self.policy
        return f"Fetcher(origin={self._key_prefix!r}, concurrency={p.concurrency}, " \
               f"rate_limit={p.rate_limit})"  # fmt: skip

    async def fetch(self, request: Request, accept: Callable[[Response], T]) -> T:
        """``accept(response)`` of a 200 for ``request``, retrying transient failures.

        Raises GaveUp once the retries run out; AuthError, BadRequestError,
        PageNotFoundError and the other ApiErrors no retry can fix at once.
        """
        try:
            try:
                return await self._attempt(request, accept)
            except RETRYABLE as first_failure:
                # Most requests succeed at once; only failures pay for the retry machinery.
                return await self._retry(request, accept, first_failure)
        except GaveUp as exc:
            self.bus.emit(NotRetried(request.what, exc.attempts, exc.cause, True))
            raise
        except ApiError as exc:
            self.bus.emit(NotRetried(request.what, 0, describe(exc), False))
            raise

    async def _retry(
        self, request: Request, accept: Callable[[Response], T], failure: BaseException
    ) -> T:
        """Try ``request`` again after its first attempt failed with ``failure``."""
        p = self.policy
        result: list[T] = []
        pending: BaseException | None = failure
        attempts = 0
        dns_failures = 0

        def give_up(exc: BaseException) -> bool:
            nonlocal dns_failures
            dns_failures += isinstance(exc, HostNotFoundError)
            return dns_failures > DNS_RETRIES

        async def on_backoff(details: Any) -> None:
            pause = self._on_backoff(request, details)
            if pause > 0 and self._share_pause is not None:
                await self._share_pause(pause)  # every process sharing the limit waits too

        try:
            async for attempt in backoff.aretry_context(
                RETRYABLE,
                backoff.expo,
                max_tries=p.max_retries + 1,
                jitter=backoff.full_jitter,
                giveup=give_up,
                on_backoff=on_backoff,
                logger=None,
                factor=p.backoff_base,
                max_value=p.backoff_max,
            ):
                attempts += 1
                with attempt:
                    if pending is not None:  # the first attempt, already made
                        error, pending = pending, None
                        raise error
                    result.append(await self._attempt(request, accept))
        except RETRYABLE as exc:
            drop_frames(exc)
            raise GaveUp(request, attempts, exc) from None
        return result[0]

    def _on_backoff(self, request: Request, details: Any) -> float:
        """Log and report a retry; returns the pause a 429 ordered (0 for any other failure)."""
        exc = details.get("exception")
        if exc is not None:
            # It lives on through the wait; its frames would keep the body it could not use.
            drop_frames(exc)
        wait = float(details.get("wait", 0.0))
        attempt = int(details.get("tries", 0))
        reason = describe(exc)
        now = self._clock()
        pause = 0.0
        if isinstance(exc, RateLimitedError):
            # Every worker waits, not just the one that was told.
            cap = self.policy.backoff_max
            asked = exc.retry_after
            pause = min(asked if asked is not None else wait, cap)
            if asked is not None and asked > cap:
                reason += f" (capped at --backoff-max {cap:g}s)"
            until = now + pause
            added = 0.0
            if until > self._paused_until:
                added = until - max(self._paused_until, now)
                self._paused_until = until
            self.bus.emit(RateLimited(asked, added))
        # The next attempt waits for the backoff and for any pause (a 429's, this worker's or
        # another's), whichever ends later: that is the wait worth stating.
        wait = max(wait, self._paused_until - now)
        kind = failure_kind(exc)
        self.bus.emit(Retrying(request.what, attempt, wait, reason, kind))
        log.info("%s: retry %d in %.2fs after %s", request.what, attempt, wait, reason,
                 extra={"unit": request.what, "attempt": attempt, "wait_s": round(wait, 3),
                        "status": getattr(exc, "status", None)})  # fmt: skip
        return pause

    async def _wait_if_paused(self) -> bool:
        """Wait out a pause; whether there was one."""
        waited = False
        while (delay := self._paused_until - self._clock()) > 0:
            waited = True
            await self._sleep(delay)
        return waited

    async def _attempt(self, request: Request, accept: Callable[[Response], T]) -> T:
        cached: CachedAnswer | None = None
        if self.cache is not None:
            cached = await self.cache.lookup(request.url)
            if cached is not None and cached.fresh:
                try:
                    result = accept(Response(request, cached.headers, cached.body))
                except Exception:
                    # Kept, but no longer read as a listing (settings changed): ask the API.
                    await self.cache.forget(request.url)
                    cached = None
                else:
                    self.bus.emit(CacheHit(request.what))
                    return result
        if self._paused_until:
            await self._wait_if_paused()
        emit = self.bus.emit
        async with self._semaphore:
            if self._limiter is not None:
                started = time.monotonic()
                await self._limiter.acquire()
                # A 429 seen by another worker while this one queued voids its slot: after
                # the pause it takes a fresh one, so the workers do not all send at its end.
                while await self._wait_if_paused():
                    await self._limiter.acquire()
                emit(LimiterWaited(time.monotonic() - started))
            else:
                await self._wait_if_paused()
            await self._pacer.wait_for_slot()
            self._in_flight += 1
            emit(RequestStarted(self._in_flight))
            started = time.perf_counter()
            wire = 0
            try:
                status, headers, body, wire = await self._send(request, cached)
            except TRANSPORT_ERRORS as exc:
                key = "deadline" if isinstance(exc, DeadlineExceeded) else type(exc).__name__
                emit(RequestDone(None, key, time.perf_counter() - started, 0, request.what))
                raise
            except ApiError as exc:
                key = "too_large" if isinstance(exc, ResponseTooLargeError) else "invalid_body"
                emit(RequestDone(200, key, time.perf_counter() - started, 0, request.what))
                raise
            finally:
                self._in_flight -= 1
        if "ratelimit-remaining" in headers or "x-ratelimit-remaining" in headers:
            self._pacer.pace(headers)
        if status == 304 and cached is not None:
            return await self._revalidated(request, accept, cached, headers, started)
        if status == 200:
            try:
                result = accept(Response(request, headers, body))
            except Exception as exc:
                key = "invalid_body" if isinstance(exc, InvalidBodyError) else type(exc).__name__
                emit(RequestDone(200, key, time.perf_counter() - started, wire, request.what))
                raise
            emit(RequestDone(200, None, time.perf_counter() - started, wire, request.what))
            if self.cache is not None:  # only now: a body that did not read is never kept
                emit(CacheMiss(request.what))
                await self.cache.keep(request.url, headers, body)
            return result
        emit(RequestDone(status, str(status), time.perf_counter() - started, wire,
                         request.what))  # fmt: skip
        raise status_error(request, status, headers)

    async def _revalidated(
        self,
        request: Request,
        accept: Callable[[Response], T],
        cached: CachedAnswer,
        headers: httpx.Headers,
        started: float,
    ) -> T:
        """A 304 for a conditional request: the kept answer is served, and kept again."""
        assert self.cache is not None
        seconds = time.perf_counter() - started
        try:
            result = accept(Response(request, cached.headers, cached.body))
        except Exception as exc:
            await self.cache.forget(request.url)
            self.bus.emit(RequestDone(304, type(exc).__name__, seconds, 0, request.what))
            raise RetryableError(f"HTTP 304 from {request.url} for a cached answer that no "
                                 "longer reads as a listing", url=request.url,
                                 status=304) from None  # fmt: skip
        self.bus.emit(RequestDone(304, None, seconds, 0, request.what))
        self.bus.emit(CacheRevalidated(request.what))
        await self.cache.renew(request.url, cached, headers)
        return result

    def sends_key_to(self, url: str) -> bool:
        """Whether ``url`` is on the origin the API key is for (only there is it sent)."""
        n = len(self._key_prefix)
        return url[:n].lower() == self._key_prefix and url[n : n + 1] in ("/", "?", "")

    async def _send(
        self, request: Request, cached: CachedAnswer | None = None
    ) -> tuple[int, httpx.Headers, bytes, int]:
        """One exchange: the status, the headers, the body of a 200 (bounded) and its size.

        With a ``cached`` answer the request is conditional when the answer allows it.
        """
        headers = self._keyed if self.sends_key_to(request.url) else self._plain
        if cached is not None and (validators := cached.validators()):
            headers = httpx.Headers({**headers, **validators})
        message = httpx.Request(
            request.method, request.url, headers=headers, extensions={"timeout": self._timeout}
        )
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                response = await self._exchange(message)
                try:
                    status = response.status_code
                    if status == 200:
                        limit = self.policy.max_response_bytes
                        body, wire = await read_body(request, response, limit)
                    else:
                        body, wire = b"", 0
                finally:
                    await response.aclose()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise DeadlineExceeded(self._deadline) from None
        return status, response.headers, body, wire
