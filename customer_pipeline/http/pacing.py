"""How fast requests may go: the rate limiter and the pacing the rate-limit headers ask for.

The limiter (aiolimiter's leaky bucket, or one shared through Redis) holds every request to
``rate_limit`` per second. The Pacer reads ``RateLimit-*``/``X-RateLimit-*`` headers and,
once fewer requests are left than run at once, spaces the sends over the time to the reset,
one slot per request, so the quota runs out no sooner than it renews.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import httpx
from aiolimiter import AsyncLimiter

log = logging.getLogger("customer_pipeline.client")

BURST_SECONDS: Final = 0.02
# An X-RateLimit-Reset above this is a Unix time, not a wait: 10^9 s is 31 years, and every
# epoch second since 2001 is above it.
EPOCH_RESET_ABOVE: Final = 1_000_000_000


class Limiter(Protocol):
    """The rate limit every request waits on: aiolimiter's, or one shared through Redis."""

    async def acquire(self) -> None: ...


class SharedLimiter(Limiter, Protocol):
    """A limiter that also tells every process sharing it about a 429's pause."""

    async def pause(self, seconds: float) -> None: ...


def make_limiter(rate: float) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests/s with a burst of 2% of a second (at least 1).

    A burst of exactly 1 loses ~10% of the rate to timer wake-up latency at 100/s; 2% of a
    second's worth keeps any one-second window within 2% of the limit.
    """
    if rate <= 0:
        return None
    burst = max(1.0, rate * BURST_SECONDS)
    return AsyncLimiter(burst, burst / rate)


class Pacer:
    """The gap between sends that the rate-limit headers ask for, and the next free slot."""

    def __init__(
        self,
        concurrency: int,
        max_gap: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_gap`` caps the gap (the fetcher's ``backoff_max``)."""
        self._concurrency = concurrency
        self._max_gap = max_gap
        self._sleep = sleep
        self._clock = clock
        # This many seconds between two sends, and the time of the next free one; each
        # request takes its own, so none go together.
        self._gap = 0.0
        self._next_send = 0.0
        self._gap_until = 0.0
        self._schedule = 0  # counts the answers that set the schedule anew

    async def wait_for_slot(self) -> None:
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

    def pace(self, headers: httpx.Headers) -> None:
        """Space the sends as the server's rate-limit headers ask, before any 429.

        A pause for every worker would end for all of them at once, a burst the quota has no
        room for; a gap between sends spreads what remains over the time to the reset.
        """
        wait = rate_limit_wait(headers, self._concurrency, time.time())
        if wait is None or wait <= 0:
            # Not "enough left again": answers come back out of order, and an older one
            # must not undo the gap a newer one asked for. The gap ends at the reset.
            return
        wait = min(wait, self._max_gap)
        if wait != self._gap:
            log.debug("the API's rate-limit headers ask for %.2fs between requests", wait)
        now = self._clock()
        self._gap = wait
        self._gap_until = max(self._gap_until, now + wait * (rate_limit_left(headers) + 1))
        # The newest count replaces the schedule: slots handed out on an older one may be
        # more than what is left, so their holders take new ones (and keep their order).
        self._next_send = now + wait
        self._schedule += 1


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
