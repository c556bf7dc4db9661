"""What a run's fetcher may take besides its policy: a shared limiter and a response cache."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..settings import Settings
from .cache import ResponseCache, open_cache

if TYPE_CHECKING:
    from .shared_limit import SharedRateLimiter

log = logging.getLogger("customer_pipeline.client")


@contextlib.asynccontextmanager
async def fetch_extras(
    settings: Settings,
) -> AsyncIterator[tuple[SharedRateLimiter | None, ResponseCache | None]]:
    """The limiter (None: the fetcher's own) and cache the settings ask for, closed after."""
    cache = open_cache(settings)
    limiter: SharedRateLimiter | None = None
    try:
        if settings.limiter_url is not None and settings.rate_limit > 0:
            from .shared_limit import open_shared_limiter

            limiter = await open_shared_limiter(settings)
        elif settings.limiter_url is not None:
            log.warning("--limiter-url shares nothing while --rate-limit is 0 (unlimited): "
                        "set --rate-limit to the API's limit")  # fmt: skip
        yield limiter, cache
    finally:
        if limiter is not None:
            await limiter.close()
        if cache is not None:
            await cache.close()
