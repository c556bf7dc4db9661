"""The simulator's aiohttp application: faults per request, then the style's cached reply.

Faults (401 without the key, 429 from a token bucket, latency, 500/503, dropped connections,
truncated bodies) are drawn per request from a generator seeded by the config, the same way
for every pagination style.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .config import SimulatorConfig
from .dataset import Dataset
from .pagination import RESOURCE, SUPPORT, BadQuery, make_style


class _TokenBucket:
    """Server-side rate limit: ``rate`` requests per second, bursts of up to one second's."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Quota:
    """A fixed-window quota (reqres's "250 a day", scaled down): ``limit`` per ``window``."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.started = time.monotonic()
        self.used = 0

    def take(self) -> tuple[bool, int, float]:
        """(allowed, remaining after this request, seconds until the window resets)."""
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started += (now - self.started) // self.window * self.window
            self.used = 0
        reset = self.started + self.window - now
        if self.used >= self.limit:
            return False, 0, reset
        self.used += 1
        return True, self.limit - self.used, reset


@dataclass
class SimulatorStats:
    """What the simulator served, for tests and benchmarks."""

    requests: int = 0
    ok: int = 0
    errors_5xx: int = 0
    rate_limited: int = 0
    truncated: int = 0
    dropped: int = 0
    unauthorized: int = 0
    max_in_flight: int = 0
    not_modified: int = 0


class Simulator:
    """The aiohttp application and its state."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dataset = Dataset(
            config.total,
            config.seed,
            config.dirty_rate,
            config.duplicate_rate,
            field_style=config.field_style,
        )
        self.stats = SimulatorStats()
        self._rng = random.Random(config.seed)
        self._bucket = _TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self._quota = _Quota(config.quota, config.quota_window_s) if config.quota > 0 else None
        self._in_flight = 0
        self._style = make_style(config, self.dataset)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(RESOURCE, self.list_users)
        app.router.add_get(RESOURCE + "/{user_id}", self.get_user)
        app.router.add_get("/_simulator/stats", self.get_stats)
        return app

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.api_key
        return key is None or request.headers.get("x-api-key") == key

    async def _misbehave(
        self, request: web.Request, rate_headers: dict[str, str]
    ) -> web.StreamResponse | None:
        """Apply the per-request faults; a response to send instead, or None to go on.

        ``rate_headers`` receives what is left of the quota, for the answer to carry.
        """
        cfg = self.config
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _json({"error": "Missing API key"}, status=401)
        if self._quota is not None:
            allowed, remaining, reset = self._quota.take()
            rate_headers.update(self._rate_headers(remaining, reset))
            if not allowed:
                self.stats.rate_limited += 1
                return _json({"error": "Too many requests"}, status=429,
                             headers={"Retry-After": f"{reset:.3f}", **rate_headers})  # fmt: skip
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            self.stats.rate_limited += 1
            return _json(
                {"error": "Too many requests"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000 * self._rng.uniform(0.5, 1.5))
        roll = self._rng.random()
        if roll < cfg.failure_rate:
            self.stats.errors_5xx += 1
            status = 500 if self._rng.random() < 0.5 else 503
            if self._rng.random() < 0.5:
                return _json({"error": "Internal error"}, status=status)
            return web.Response(
                status=status,
                text="<html><body><h1>Server Error</h1></body></html>",
                content_type="text/html",
            )
        roll -= cfg.failure_rate
        if roll < cfg.drop_rate:
            self.stats.dropped += 1
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPInternalServerError()  # never delivered: the socket is gone
        return None

    def _rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """What is left of the quota, in the configured header style (fractional seconds)."""
        style = self.config.rate_headers
        if style == "ietf":
            return {"RateLimit-Remaining": str(remaining), "RateLimit-Reset": f"{reset:.3f}"}
        if style == "x":
            return {"X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": f"{reset:.3f}"}
        if style == "x-epoch":
            return {"X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": f"{time.time() + reset:.3f}"}  # fmt: skip
        return {}

    def _caching_headers(self, body: bytes) -> dict[str, str]:
        headers = {}
        if self.config.etag:
            headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if self.config.cache_control is not None:
            headers["Cache-Control"] = self.config.cache_control
        return headers

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        """One listing page in the configured style, unless a fault answers instead."""
        self.stats.requests += 1
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            rate_headers: dict[str, str] = {}
            if (fault := await self._misbehave(request, rate_headers)) is not None:
                return fault
            try:
                reply = self._style.reply(request.query, f"{request.scheme}://{request.host}")
            except BadQuery as exc:
                return _json({"error": str(exc)}, status=400)
            body = reply.body
            headers = {**(reply.headers or {}), **rate_headers,
                       **self._caching_headers(body)}  # fmt: skip
            etag = headers.get("ETag")
            if etag is not None and etag in request.headers.get("If-None-Match", ""):
                self.stats.not_modified += 1
                return web.Response(status=304, headers=headers)
            if self._rng.random() < self.config.truncate_rate:
                self.stats.truncated += 1
                body = body[: max(1, len(body) // 2)]
            self.stats.ok += 1
            return web.Response(body=body, headers=headers, content_type="application/json")
        finally:
            self._in_flight -= 1

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        """One user in the configured field style, or 404 ``{}``."""
        self.stats.requests += 1
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _json({"error": "Missing API key"}, status=401)
        try:
            user_id = int(request.match_info["user_id"])
        except ValueError:
            return _json({}, status=404)
        if not 1 <= user_id <= self.dataset.total:
            return _json({}, status=404)
        return _json({"data": self.dataset.record(user_id), "support": SUPPORT})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        """What was served so far (for tests and benchmarks in another process)."""
        return _json(dataclasses.asdict(self.stats))


def _json(doc: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, headers=headers, content_type="application/json"
    )


@asynccontextmanager
async def serve(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[str, Simulator]]:
    """Serve the simulator on ``host:port`` (0 = a free port); yields (base_url, simulator)."""
    simulator = Simulator(config)
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        yield f"http://{host}:{bound_port}", simulator
    finally:
        await runner.cleanup()
