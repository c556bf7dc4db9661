"""What a listing page is, how its body is read, and which page comes next.

Pure, I/O-free pieces of paging that the client and the checkpoint share.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .errors import InvalidBodyError

log = logging.getLogger("customer_pipeline.paging")


class StopSignal(Protocol):
    """Something to ask a run to stop: an asyncio.Event or an anyio.Event."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


@dataclass(slots=True)
class Page:
    """One listing page as the API sent it: its number and its raw records."""

    number: int
    records: list[Any]
    total_pages: int | None
    body: bytes = b""  # as received, for the checkpoint


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _as_count(value: Any) -> int | None:
    """A non-negative integer from an envelope field, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_envelope(body: bytes, *, url: str, per_page: int) -> tuple[list[Any], int | None]:
    """Records and total_pages from a listing body; InvalidBodyError if it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBodyError(
            f"response from {url} is not JSON (truncated?)", url=url, status=200
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise InvalidBodyError(
            f"response from {url} is not a reqres listing (no 'data' list)", url=url, status=200
        )
    total_pages = _as_count(doc.get("total_pages"))
    if total_pages is None:
        total = _as_count(doc.get("total"))
        size = _as_count(doc.get("per_page")) or per_page
        if total is not None and size:
            total_pages = -(-total // size)
    return doc["data"], total_pages


class PagePlan:
    """Which page to fetch next; total_pages may grow (or be unknown) while paging."""

    def __init__(
        self,
        total: int | None,
        skip: Collection[int],
        max_pages: int,
        stop: StopSignal | None = None,
    ) -> None:
        self.max_pages = max_pages
        self.total: int | None = None
        self.skip = skip
        self.stop = stop
        self._next = 2
        self._warned = False
        self.observe_total(total)

    def _limit(self) -> int:
        return self.max_pages if self.total is None else self.total

    def claim(self) -> int | None:
        if self.stop is not None and self.stop.is_set():
            return None  # asked to stop: no new pages, in-flight ones finish
        while self._next <= self._limit():
            number = self._next
            self._next += 1
            if number not in self.skip:
                return number
        return None

    def remaining(self) -> int:
        return max(0, self._limit() - self._next + 1)

    def observe_total(self, total: int | None) -> None:
        if total is not None and total > self.max_pages:
            # A bogus total (10**9) must not become 10**9 requests: page until the first
            # empty page instead, never past max_pages.
            if not self._warned:
                log.warning(
                    "API reports %d pages, more than max_pages=%d: ignoring it and paging "
                    "until the first empty page",
                    total,
                    self.max_pages,
                )
            self._warned = True
            return
        if total is not None and (self.total is None or total > self.total):
            self.total = total

    def observe(self, page: Page) -> None:
        self.observe_total(page.total_pages)
        trusted = page.total_pages is not None and page.total_pages <= self.max_pages
        if not trusted and not page.records and (self.total is None or page.number <= self.total):
            # Unknown length: the first empty page marks the end.
            self.total = page.number - 1
