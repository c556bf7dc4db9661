"""The HTTP layer under the client: httpx's API over aiohttp's transport (or httpx's own).

httpx's own connection pool is several times slower at high concurrency (encode/httpx#3215),
so the aiohttp transport is the default; both are sized to ``concurrency``. Either is wrapped
in a SeamTransport, the one place where a lower library's failures are mapped: a name that
does not resolve becomes HostNotFoundError, a refused connection ConnectionRefused, any other
aiohttp error an httpx.TransportError.
Bodies are read raw and inflated here, a bounded piece at a time (``BodyDecoder``), because
httpx inflates a whole network chunk at once: 64 KB of a gzip bomb is 64 MB.
"""

from __future__ import annotations

import socket
import zlib
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar
from typing import Any, Final

import aiohttp
import httpx

from .._version import __version__
from ..settings import Settings

DEFAULT_HEADERS: Final = {
    "user-agent": f"customer-pipeline/{__version__}",
    "accept": "application/json",
    # Only what BodyDecoder can inflate within a bound (httpx would add br or zstd when
    # their packages happen to be installed).
    "accept-encoding": "gzip, deflate",
}
# getaddrinfo's "no such name" answers; others (EAI_AGAIN) may be a resolver's blip.
_NO_SUCH_NAME: Final = frozenset(
    getattr(socket, name, None) for name in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL")
)


class HostNotFoundError(httpx.ConnectError):
    """The base URL's host name does not resolve (a typo, or no DNS here)."""

    def __init__(self, host: str, *, temporary: bool) -> None:
        detail = "a temporary failure of the resolver" if temporary else "no such name"
        super().__init__(f"cannot resolve host {host} ({detail})")
        self.host = host
        self.temporary = temporary


class ConnectionRefused(httpx.ConnectError):
    """Nothing listens at the API's host and port: it is down (retried: it may be restarting),
    or the base URL names the wrong port."""

    def __init__(self, address: str) -> None:
        super().__init__(f"connection refused by {address}")
        self.address = address


def make_transport(settings: Settings) -> SeamTransport:
    """The transport of a run: a pool sized to ``concurrency``, errors mapped at the seam.

    The fetcher sends through it directly: an AsyncClient around it would add cookie
    handling, auth and redirect machinery to every request, none of which a listing needs.
    """
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    transport: httpx.AsyncBaseTransport
    if settings.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits, verify=settings.verify_tls)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits, verify=settings.verify_tls)
    return SeamTransport(transport)


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """An httpx client on the run's transport, for callers that want one: no redirects."""
    return httpx.AsyncClient(
        transport=make_transport(settings),
        timeout=httpx.Timeout(settings.timeout),
        # A redirect must never carry x-api-key to another origin; we follow none.
        follow_redirects=False,
        headers=DEFAULT_HEADERS,
        # A listing API needs no session; parsing Set-Cookie costs more than the request.
        cookies=_NoCookies(),
    )


class SeamTransport(httpx.AsyncBaseTransport):
    """Wraps a transport so that what it raises, sending or streaming, is httpx's kind."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            mapped = map_error(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _SeamStream(response.stream, request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SeamStream(httpx.AsyncByteStream):
    """A response body whose read errors are mapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            mapped = map_error(exc, self._request)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def map_error(exc: Exception, request: httpx.Request) -> Exception:
    """httpx's exception for what a transport raised (``exc`` itself when it already is)."""
    resolver_error = _resolver_error(exc)
    if resolver_error is not None:
        return HostNotFoundError(
            request.url.host, temporary=resolver_error.errno not in _NO_SUCH_NAME
        )
    if _caused_by(exc, ConnectionRefusedError):
        # aiohttp's says ConnectTimeout, httpx's "All connection attempts failed".
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        return ConnectionRefused(f"{url.host}:{port}")
    if isinstance(exc, httpx.TransportError | TimeoutError) or not isinstance(
        exc, aiohttp.ClientError
    ):
        return exc
    # What httpx-aiohttp leaves unmapped: a bad status line, a malformed header...
    return httpx.RemoteProtocolError(str(exc), request=request)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an error it was raised from is a ``kind``."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, kind):
            return True
        error = error.__cause__ or error.__context__
    return False


def _resolver_error(exc: BaseException) -> socket.gaierror | None:
    """The getaddrinfo failure behind ``exc`` (aiohttp and httpx both chain it), if any."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return error
        if isinstance(getattr(error, "os_error", None), socket.gaierror):
            return error.os_error  # type: ignore[attr-defined, no-any-return]
        error = error.__cause__ or error.__context__
    return None


class BodyDecoder:
    """Inflates a gzip or deflate body piece by piece, never past a given length."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip: 16 + MAX_WBITS; deflate is zlib-wrapped, or raw from some servers (below).
        self._wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._inflater = zlib.decompressobj(self._wbits)
        self._started = False

    @classmethod
    def for_header(cls, value: str | None) -> BodyDecoder | None:
        """The decoder a Content-Encoding header asks for; None for identity.

        Raises ValueError for an encoding we did not ask for and cannot bound.
        """
        encoding = (value or "").strip().lower()
        if encoding in ("", "identity"):
            return None
        if encoding in ("gzip", "x-gzip", "deflate"):
            return cls(encoding)
        raise ValueError(f"unsupported Content-Encoding {encoding[:40]!r}")

    def decode(self, data: bytes, max_length: int) -> bytes:
        """Inflate ``data``; at most ``max_length`` bytes come out (more would mean too many)."""
        try:
            out = self._inflater.decompress(data, max_length)
        except zlib.error:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise
            self._wbits = -zlib.MAX_WBITS  # a raw deflate stream, without the zlib header
            self._inflater = zlib.decompressobj(self._wbits)
            out = self._inflater.decompress(data, max_length)
        self._started = True
        return out

    @property
    def complete(self) -> bool:
        """The compressed stream's end marker has been read."""
        return self._inflater.eof


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing and sends nothing."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None
