"""ApiStats: what talking to the API cost in one run (the report's ``api`` block), as events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .bus import Bus
from .events import (
    CacheHit,
    CacheMiss,
    CacheRevalidated,
    LimiterWaited,
    RateLimited,
    RequestDone,
    RequestStarted,
    Retrying,
    UnitFetched,
)


@dataclass
class ApiStats:
    """What talking to the API cost in one run; ``attach`` it to a bus to keep it counting."""

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
    cache_hits: int = 0
    cache_misses: int = 0
    cache_revalidated: int = 0

    def attach(self, bus: Bus) -> ApiStats:
        """Count the events of ``bus`` from now on; returns self."""
        bus.subscribe(RequestStarted, self._started)
        bus.subscribe(RequestDone, self._done)
        bus.subscribe(LimiterWaited, self._waited)
        bus.subscribe(Retrying, self._retrying)
        bus.subscribe(RateLimited, self._paused)
        bus.subscribe(UnitFetched, self._fetched)
        bus.subscribe(CacheHit, self._cache_hit)
        bus.subscribe(CacheMiss, self._cache_miss)
        bus.subscribe(CacheRevalidated, self._cache_revalidated)
        return self

    def _started(self, event: RequestStarted) -> None:
        self.requests += 1
        if event.in_flight > self.max_in_flight:
            self.max_in_flight = event.in_flight

    def _done(self, event: RequestDone) -> None:
        self.bytes_received += event.bytes_received
        if event.failure is None:
            self.successes += 1
            return
        self.failures[event.failure] += 1
        if event.status == 429:
            self.rate_limited += 1

    def _waited(self, event: LimiterWaited) -> None:
        self.limiter_wait_s += event.seconds

    def _retrying(self, event: Retrying) -> None:
        self.retries += 1

    def _paused(self, event: RateLimited) -> None:
        self.retry_after_wait_s += event.added_s

    def _fetched(self, event: UnitFetched) -> None:
        self.pages_fetched += 1

    def _cache_hit(self, event: CacheHit) -> None:
        self.cache_hits += 1

    def _cache_miss(self, event: CacheMiss) -> None:
        self.cache_misses += 1

    def _cache_revalidated(self, event: CacheRevalidated) -> None:
        self.cache_revalidated += 1

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
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_revalidated": self.cache_revalidated,
        }


def _seconds(value: float) -> float:
    """Rounded to the millisecond, never below zero, never -0.0 (clock readings jitter)."""
    return round(max(value, 0.0), 3) + 0.0
