"""The fetcher: policy over bytes. A request in; status, headers and body out.

It holds what every request obeys, whatever it asks for: at most ``concurrency`` in flight and
``rate_limit`` per second (both across retries), retries with exponential backoff and full
jitter, the pause every worker takes after a 429 (Retry-After), the response size cap, a
deadline on the whole attempt, and the map from HTTP statuses to errors. It knows no URL
shapes and no envelopes: the caller's ``accept(response)`` reads the body, and may raise a
RetryableError (InvalidBodyError for a truncated 200) to have the attempt made again.
What happens is reported as events on a Bus (observe); sleep and clock are injectable, so
tests never wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import backoff
import httpx
from aiolimiter import AsyncLimiter

from ..errors import (
    ApiError,
    AuthError,
    BadRequestError,
    InvalidBodyError,
    PageNotFoundError,
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
from .transport import DEFAULT_HEADERS, BodyDecoder, ConnectionRefused, HostNotFoundError

if TYPE_CHECKING:
    from .cache import CachedAnswer, ResponseCache

log = logging.getLogger("customer_pipeline.client")

T = TypeVar("T")
BURST_SECONDS: Final = 0.02
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
# Transient failures below the HTTP layer. aiohttp errors are mapped to httpx's by the
# transport, but not all of them, so they are listed too.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TransportError,
    aiohttp.ClientError,
    TimeoutError,
)
RETRYABLE: tuple[type[Exception], ...] = (RetryableError, *TRANSPORT_ERRORS)
# A name that does not resolve gets one more try (a resolver's blip), not the whole budget.
DNS_RETRIES: Final = 1
# The start of every "not a listing" message: _describe() cuts it (and the URL) off.
NOT_A_LISTING: Final = "the response from "
# An X-RateLimit-Reset above this is a Unix time, not a wait: 10^9 s is 31 years, and every
# epoch second since 2001 is above it.
EPOCH_RESET_ABOVE: Final = 1_000_000_000


class Limiter(Protocol):
    """The rate limit every request waits on: aiolimiter's, or one shared through Redis."""

    async def acquire(self) -> None: ...


class SharedLimiter(Limiter, Protocol):
    """A limiter that also tells every process sharing it about a 429's pause."""

    async def pause(self, seconds: float) -> None: ...


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


class DeadlineExceeded(TimeoutError):
    """An attempt took longer than ``timeout`` from connect to last byte; retried."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no complete response within {seconds:g}s (--timeout bounds the whole request, "
            "connect to last byte)"
        )


class GaveUp(Exception):
    """A request still failed after every retry; the caller turns it into its own error."""

    def __init__(self, request: Request, attempts: int, error: BaseException) -> None:
        self.request = request
        self.attempts = attempts
        self.cause = describe(error)
        # What the user can do about it, when the failure says.
        self.hint: str | None = None
        if isinstance(error, HostNotFoundError):
            self.hint = "check --base-url"
        elif isinstance(error, ConnectionRefused):
            self.hint = "is the API running at --base-url?"
        super().__init__(f"{request.what} failed after {attempts} attempts: {self.cause}")


def make_limiter(rate: float) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests/s with a burst of 2% of a second (at least 1).

    A burst of exactly 1 loses ~10% of the rate to timer wake-up latency at 100/s; 2% of a
    second's worth keeps any one-second window within 2% of the limit.
    """
    if rate <= 0:
        return None
    burst = max(1.0, rate * BURST_SECONDS)
    return AsyncLimiter(burst, burst / rate)


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
        # What the rate-limit headers ask for: this many seconds between two sends, and the
        # time of the next free one; each request takes its own, so none go together.
        self._gap = 0.0
        self._next_send = 0.0
        self._gap_until = 0.0
        self._schedule = 0  # counts the answers that set the schedule anew
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

    async def _wait_for_paced_slot(self) -> None:
        """Take the next send time the rate-limit headers leave, and wait for it."""
        while self._gap > 0:
            now = self._clock()
            if now >= self._gap_until:  # the quota's window has reset
                self._gap = 0.0
                return
            slot = max(now, self._next_send)
            self._next_send = slot + self._gap
            if slot <= now:
                return
            schedule = self._schedule
            await self._sleep(slot - now)
            if schedule == self._schedule:
                return

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
            await self._wait_for_paced_slot()
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
            self._pace(headers)
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

    def _pace(self, headers: httpx.Headers) -> None:
        """Space the sends as the server's rate-limit headers ask, before any 429.

        A pause for every worker would end for all of them at once, a burst the quota has no
        room for; a gap between sends spreads what remains over the time to the reset.
        """
        wait = rate_limit_wait(headers, self.policy.concurrency, time.time())
        if wait is None or wait <= 0:
            # Not "enough left again": answers come back out of order, and an older one
            # must not undo the gap a newer one asked for. The gap ends at the reset.
            return
        wait = min(wait, self.policy.backoff_max)
        if wait != self._gap:
            log.debug("the API's rate-limit headers ask for %.2fs between requests", wait)
        now = self._clock()
        self._gap = wait
        self._gap_until = max(self._gap_until, now + wait * (rate_limit_left(headers) + 1))
        # The newest count replaces the schedule: slots handed out on an older one may be
        # more than what is left, so their holders take new ones (and keep their order).
        self._next_send = now + wait
        self._schedule += 1

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
                        body, wire = await self._read_body(request, response)
                    else:
                        body, wire = b"", 0
                finally:
                    await response.aclose()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise DeadlineExceeded(self._deadline) from None
        return status, response.headers, body, wire

    async def _read_body(self, request: Request, response: httpx.Response) -> tuple[bytes, int]:
        """The body, inflated as it streams and refused as soon as it passes the limit."""
        limit = self.policy.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            self._too_large(request, int(declared))
        if response.is_stream_consumed:  # read before us (respx's httpx mocker): decoded
            body = response.content
            if len(body) > limit:
                self._too_large(request, len(body))
            return body, len(body)
        try:
            decoder = BodyDecoder.for_header(response.headers.get("content-encoding"))
        except ValueError as exc:
            raise ApiError(f"{request.what}: {exc} ({request.url})", url=request.url,
                           status=200) from None  # fmt: skip
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
                    self._too_large(request, size, decoder, wire)
                chunks.append(chunk)
            if decoder is not None and not decoder.complete:
                raise zlib.error("the stream ends before its end marker")
        except zlib.error as exc:
            raise InvalidBodyError(
                f"{NOT_A_LISTING}{request.url} is a corrupt "
                f"{decoder.encoding if decoder else ''} stream ({exc})",
                url=request.url,
                status=200,
            ) from None
        return b"".join(chunks), wire

    def _too_large(
        self, request: Request, size: int, decoder: BodyDecoder | None = None, wire: int = 0
    ) -> None:
        limit = f"max_response_bytes={self.policy.max_response_bytes}"
        if decoder is None:
            what = f"response of {size} bytes or more exceeds {limit}"
        else:
            what = (
                f"{decoder.encoding} response inflates to more than {limit} from {wire} bytes "
                "on the wire (a compression bomb?)"
            )
        raise ResponseTooLargeError(
            f"{request.what}: {what} ({request.url})", url=request.url, status=200
        )


def status_error(request: Request, status: int, headers: httpx.Headers) -> ApiError:
    """The error for an answer other than 200: retryable or not, naming the fix."""
    url = request.url
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return RateLimitedError(
            f"429 Too Many Requests from {url}", url=url, retry_after=retry_after
        )
    if status in RETRY_STATUSES:
        return RetryableError(f"HTTP {status} from {url}", url=url, status=status)
    if status in (401, 403):
        return AuthError(
            f"API key missing or invalid (HTTP {status} from {url}): "
            "set CUSTOMER_PIPELINE_API_KEY or pass --api-key",
            url=url,
            status=status,
        )
    if status == 400:
        return BadRequestError(
            f"HTTP 400 Bad Request from {url}: check --per-page and --base-url",
            url=url,
            status=status,
        )
    if status == 404:
        return PageNotFoundError(
            f"HTTP 404 for listing {request.what} at {url}: "
            "check --base-url and --resource point at a paginated listing",
            url=url,
            status=status,
        )
    if status == 304:
        # Only an answer to a conditional request may be a 304, and there is no body to use.
        return ApiError(
            f"unexpected HTTP 304 Not Modified from {url}: the request was not conditional, "
            "so there is no kept answer to serve (a caching proxy in between?); not retried",
            url=url,
            status=status,
        )
    if 300 <= status < 400:
        target = clip(headers.get("location", "?"))
        return ApiError(
            f"HTTP {status} redirect from {url} to {target}: redirects are not followed "
            "(the API key must not travel); set --base-url to the final address",
            url=url,
            status=status,
        )
    return ApiError(f"unexpected HTTP {status} from {url}", url=url, status=status)


def rate_limit_wait(headers: httpx.Headers, concurrency: int, now: float) -> float | None:
    """Seconds between requests that the server's rate-limit headers ask for, or None.

    ``RateLimit-Remaining``/``RateLimit-Reset`` (IETF draft: the reset in delta seconds), else
    ``X-RateLimit-Remaining``/``X-RateLimit-Reset``, whose reset is a Unix time when it is
    above EPOCH_RESET_ABOVE (GitHub's style) and delta seconds otherwise; ``now`` is the Unix
    time. While at least ``concurrency`` requests remain nothing needs to slow down; below
    that the remaining ones are spread over the time to the reset (all of it at 0 left).
    """
    remaining = headers.get("ratelimit-remaining")
    reset = headers.get("ratelimit-reset")
    epoch_allowed = False
    if remaining is None:
        remaining = headers.get("x-ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset")
        epoch_allowed = True
    if remaining is None or reset is None:
        return None
    try:
        left = int(remaining.strip())
        seconds = float(reset.strip())
    except ValueError:
        return None
    if left < 0 or not seconds >= 0 or seconds == float("inf") or left >= concurrency:
        return None
    if epoch_allowed and seconds > EPOCH_RESET_ABOVE:
        seconds = max(0.0, seconds - now)
    return seconds / (left + 1)


def rate_limit_left(headers: httpx.Headers) -> int:
    """The requests the rate-limit headers say are left (0 when they do not say)."""
    remaining = headers.get("ratelimit-remaining", headers.get("x-ratelimit-remaining", ""))
    try:
        return max(0, int(remaining.strip()))
    except ValueError:
        return 0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def drop_frames(error: BaseException) -> None:
    """Forget the tracebacks of ``error`` and its causes: their frames hold bodies."""
    link: BaseException | None = error
    while link is not None:
        link.__traceback__ = None
        link = link.__cause__ or link.__context__


def describe(exc: BaseException | None) -> str:
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
    if isinstance(exc, HostNotFoundError | ConnectionRefused | DeadlineExceeded):
        return str(exc)
    text = clip(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_kind(exc: BaseException | None) -> str:
    """A short, fixed key for a retried failure, to count by: its status or its kind."""
    if isinstance(exc, InvalidBodyError):
        return "invalid_body"
    if isinstance(exc, ApiError) and exc.status:
        return str(exc.status)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, TRANSPORT_ERRORS):
        return "connection"
    return "other"
