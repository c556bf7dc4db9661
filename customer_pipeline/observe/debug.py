"""DebugLog: the run's DEBUG lines, one per request and one per retry decision.

Attached only when a run logs at DEBUG, so that at any other level the events it reads cost
what an event without a subscriber costs (one dict lookup).
"""

from __future__ import annotations

import logging

from .bus import Bus
from .events import NotRetried, RequestDone, Retrying

log = logging.getLogger("customer_pipeline.http")


class DebugLog:
    """Writes what each request and each retry decision was, at DEBUG."""

    def __init__(self, max_retries: int) -> None:
        self.max_attempts = max_retries + 1

    def attach(self, bus: Bus) -> DebugLog:
        """Log the events of ``bus`` from now on; returns self."""
        bus.subscribe(RequestDone, self._request_done)
        bus.subscribe(Retrying, self._retrying)
        bus.subscribe(NotRetried, self._not_retried)
        return self

    def _request_done(self, event: RequestDone) -> None:
        if event.status is None:
            log.debug("%s: no answer (%s) after %.3fs", event.what, event.failure, event.seconds)
            return
        unusable = "" if event.failure in (None, str(event.status)) else f", {event.failure}"
        log.debug("%s: HTTP %d in %.3fs, %d bytes%s", event.what, event.status, event.seconds,
                  event.bytes_received, unusable)  # fmt: skip

    def _retrying(self, event: Retrying) -> None:
        log.debug("%s: %s -> retry, attempt %d of %d in %.2fs", event.what, event.reason,
                  event.attempt + 1, self.max_attempts, event.wait)  # fmt: skip

    def _not_retried(self, event: NotRetried) -> None:
        if event.retryable:
            log.debug("%s: %s -> give up after %d attempts", event.what, event.reason,
                      event.attempts)  # fmt: skip
        else:
            log.debug("%s: %s -> not retried (no retry fixes it)", event.what, event.reason)
