"""One rate limit shared through Redis by every process that calls the same API origin.

A Lua script hands each request its own slot (GCRA, a token bucket in one number: the
time the next slot is free, on Redis's clock so machines need not agree on the time), and
the caller sleeps until it. One round trip per request, no polling, and slots go in the
order they were asked for, so no process starves: a yes/no limiter (the ``limits``
package's ``hit()``) would leave every waiter polling or waking at the same reset, where
the fastest process wins every race. A 429's pause moves the next free slot past its end,
so every process waits it out; and a slot handed out before the pause but due inside it is
void: its holder, awake, sees the pause and takes a fresh slot after it, so the slots held
at the 429 are spread after the pause, not sent together when it ends (one more round trip,
only for a request that had to wait). Redis failing turns the shared limit into the local
one for the rest of the run, with one warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiolimiter import AsyncLimiter

from ..settings import Settings
from ._redis import redis_client, redis_errors
from .fetcher import origin_of
from .pacing import BURST_SECONDS, make_limiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("customer_pipeline.client")

KEY_PREFIX: Final = "customer-pipeline:limit:v1:"
# KEYS[1] holds the next free slot, in microseconds of Redis's clock. ARGV: the microseconds
# between requests, the burst tolerance. Returns the microseconds to wait for the slot, and
# the slot (as a string: Lua numbers reach Python as integers, and these are 16 digits).
ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local wait = math.max(0, tat - now - tolerance)
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return {wait, string.format('%d', tat)}
"""
# KEYS[2] holds the end of the latest pause. ARGV[1]: the pause in microseconds. No slot
# starts before it ends, in any process, and slots already handed out inside it are void.
PAUSE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stop = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now + tonumber(ARGV[1]))
local ttl = math.ceil((stop - now) / 1000) + 1000
redis.call('SET', KEYS[2], string.format('%d', stop), 'PX', ttl)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), stop)
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 1
"""
# ARGV[1]: a slot that was handed out. 1 when a pause set since ends after it (void), else 0.
VOIDED: Final = """
local stop = tonumber(redis.call('GET', KEYS[2]) or 0)
return stop > tonumber(ARGV[1]) and 1 or 0
"""


class SharedRateLimiter:
    """``rate`` requests/s for every process naming this Redis and origin; local if it fails."""

    def __init__(
        self,
        client: Redis,
        origin: str,
        rate: float,
        *,
        where: str = "redis",
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.where = where  # the URL as messages show it (password masked)
        self._redis = client
        self._key = KEY_PREFIX + origin_of(origin)
        self._keys = [self._key, self._key + ":paused"]
        self._interval_us = max(1, round(1_000_000 / rate))
        # The local limiter's burst: 2% of a second's worth, so one slot's wake-up latency
        # does not cost the rate (see make_limiter).
        self._tolerance_us = round(max(0.0, rate * BURST_SECONDS - 1) * self._interval_us)
        self._acquire = client.register_script(ACQUIRE)
        self._pause = client.register_script(PAUSE)
        self._voided = client.register_script(VOIDED)
        self._sleep = sleep
        self._errors = redis_errors()
        self.local: AsyncLimiter | None = None

    def __repr__(self) -> str:
        mode = "local fallback" if self.local is not None else "shared"
        return f"SharedRateLimiter({self.where!r}, rate={self.rate:g}, {mode})"

    async def check(self) -> None:
        """Reach Redis once at the start, so a dead one is said before the first request."""
        try:
            await self._redis.ping()
        except self._errors as exc:
            self._fall_back(exc)

    async def acquire(self) -> None:
        """Wait for this process's next slot of the shared rate."""
        if self.local is not None:
            await self.local.acquire()
            return
        try:
            while True:
                wait_us, slot = await self._acquire(keys=self._keys,
                                                    args=[self._interval_us, self._tolerance_us])
                if int(wait_us) <= 0:  # fmt: skip
                    return  # no time for a pause to fall between the grant and the send
                await self._sleep(int(wait_us) / 1_000_000)
                # A 429 anywhere while this worker slept voids its slot: take one after it.
                if not int(await self._voided(keys=self._keys, args=[int(slot)])):
                    return
        except self._errors as exc:
            self._fall_back(exc)
            await self.acquire()

    async def pause(self, seconds: float) -> None:
        """No process sharing the limit starts a request for ``seconds`` (a 429's pause)."""
        if self.local is not None or seconds <= 0:
            return
        try:
            await self._pause(keys=self._keys, args=[round(seconds * 1_000_000)])
        except self._errors as exc:
            self._fall_back(exc)

    async def close(self) -> None:
        """Close the connection; failing to is no reason to fail a run."""
        try:
            await self._redis.aclose()
        except self._errors as exc:
            log.debug("closing the limiter's Redis connection failed: %s", exc)

    def _fall_back(self, exc: Exception) -> None:
        if self.local is None:
            reason = str(exc).strip()[:200] or type(exc).__name__
            log.warning("shared rate limit %s failed (%s): limiting this process alone to "
                        "--rate-limit %g/s from now on", self.where, reason,
                        self.rate)  # fmt: skip
            self.local = make_limiter(self.rate)


async def open_shared_limiter(settings: Settings) -> SharedRateLimiter:
    """The shared limiter ``--limiter-url`` names, checked once (falling back if need be)."""
    assert settings.limiter_url is not None
    limiter = SharedRateLimiter(redis_client(settings.limiter_url), settings.base_url,
                                settings.rate_limit,
                                where=settings.limiter_url.masked)  # fmt: skip
    await limiter.check()
    return limiter
