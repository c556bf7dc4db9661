"""The HTTP layer under the client: httpx's API over aiohttp's transport (or httpx's own).

httpx's own connection pool is several times slower at high concurrency (encode/httpx#3215),
so the aiohttp transport is the default; both are sized to ``concurrency``.
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

import httpx

from ._version import __version__
from .settings import Settings

DEFAULT_HEADERS = {"user-agent": f"customer-pipeline/{__version__}", "accept": "application/json"}


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The httpx client for a run: pool sized to ``concurrency``, no redirects followed."""
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    transport: httpx.AsyncBaseTransport
    if settings.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits, verify=settings.verify_tls)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits, verify=settings.verify_tls)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.timeout),
        # A redirect must never carry x-api-key to another origin; we follow none.
        follow_redirects=False,
        headers=DEFAULT_HEADERS,
        # A listing API needs no session; parsing Set-Cookie costs more than the request.
        cookies=_NoCookies(),
    )


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing and sends nothing."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None
