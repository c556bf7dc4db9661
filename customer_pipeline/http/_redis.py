"""The Redis client the cache and the shared limiter talk through: quick to give up.

redis-py retries a failed command three times with up to 10 s of backoff by default; a
cache or a limiter that waits that long on a dead Redis stalls the run it should only speed
up or pace, so a command gets one immediate reconnect and a one-second socket timeout, and
the caller falls back when it still fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..settings import DatabaseUrl

if TYPE_CHECKING:
    from redis.asyncio import Redis

SOCKET_TIMEOUT_S: Final = 1.0
RECONNECTS: Final = 1


def redis_errors() -> tuple[type[Exception], ...]:
    """What a Redis command raises when Redis is down, slow or refuses (RedisError, OSError)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def redis_client(url: DatabaseUrl) -> Redis:
    """A client for ``url`` (redis:// or rediss://) that fails fast; connects on first use."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url.get_secret_value(),
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), RECONNECTS),
        health_check_interval=0,
    )
