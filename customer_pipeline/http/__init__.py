"""HTTP: the transport (I/O, error mapping, bounded decompression) and the fetcher (policy).

    Fetcher.fetch(Request, accept) ── limits, retries, 429 pause, deadline, status map
        ├── ResponseCache (cache.py: --cache, SQLite or Redis) ── answers before a request
        ├── SharedLimiter (shared_limit.py: --limiter-url, Redis) ── or aiolimiter's, local
        └── httpx.AsyncClient ── SeamTransport (aiohttp or httpx errors -> httpx's kind)
                └── AiohttpTransport | httpx.AsyncHTTPTransport

Imports only settings, errors and observe from the rest of the package.
"""

from .extras import fetch_extras
from .failures import GaveUp, clip, parse_retry_after
from .fetcher import Fetcher, FetchPolicy, Request, Response, origin_of
from .transport import make_http_client, make_transport

__all__ = [
    "FetchPolicy",
    "Fetcher",
    "GaveUp",
    "Request",
    "Response",
    "clip",
    "fetch_extras",
    "make_http_client",
    "make_transport",
    "origin_of",
    "parse_retry_after",
]
