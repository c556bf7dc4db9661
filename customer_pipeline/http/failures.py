"""What went wrong with a request: the status-to-error map and how failures are told.

Which failures are worth another attempt (RETRYABLE), the error for each HTTP status
(status_error), the deadline and the give-up errors, and the short, key-free descriptions
and count keys the events and logs carry (describe, failure_kind).
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Final

import aiohttp
import httpx

from ..errors import (
    ApiError,
    AuthError,
    BadRequestError,
    InvalidBodyError,
    PageNotFoundError,
    RateLimitedError,
    RetryableError,
)
from .transport import ConnectionRefused, HostNotFoundError

if TYPE_CHECKING:
    from .fetcher import Request

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
