"""What a listing page is, how its body is read, and which page comes next.

Pure, I/O-free pieces of paging that the client and the checkpoint share.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

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
    if isinstance(value, str):
        text = value.strip()
        # isdigit() also accepts "²" and "١٢", which int() refuses or misreads; 18 digits
        # keep int() clear of its 4300-digit limit and any count inside 64 bits.
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    return None


def parse_envelope(body: bytes, *, url: str, per_page: int) -> tuple[list[Any], int | None]:
    """Records and total_pages from a listing body; InvalidBodyError if it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = _not_json(body, exc)
    else:
        if isinstance(doc, dict) and isinstance(records := doc.get("data"), list):
            total_pages = _as_count(doc.get("total_pages"))
            if total_pages is None:
                total = _as_count(doc.get("total"))
                size = _as_count(doc.get("per_page")) or per_page
                if total is not None and size:
                    total_pages = -(-total // size)
            return records, total_pages
        problem = _not_a_listing(doc)
        doc = None  # the error's traceback would keep what orjson made of a bad body
    # Raised out here, not in the except: a JSONDecodeError holds the whole body as text,
    # and as this error's context it would live as long as this error (through retries).
    raise InvalidBodyError(f"{NOT_A_LISTING}{url} is {problem}", url=url, status=200)


NOT_A_LISTING: Final = "the response from "
_JSON_TYPES: Final = {str: "a JSON string", int: "a JSON number", float: "a JSON number",
                      bool: "JSON true or false", type(None): "JSON null"}  # fmt: skip


def _not_json(body: bytes, error: orjson.JSONDecodeError) -> str:
    """What a body that orjson cannot read is, in a few words."""
    start = body[:1024].lstrip().lower()
    if not start:
        return "an empty body"
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in start:
        return "an HTML page, not JSON"
    if error.pos >= len(body.rstrip()) and start[:1] in b'{["':
        return f"JSON cut short at byte {len(body)}"
    if "depth" in error.msg:
        return "JSON nested more than 1024 levels deep"
    return f"not JSON ({error.msg} at byte {error.pos}: {clip(repr(body[:40]), 60)})"


def _not_a_listing(doc: Any) -> str:
    """What a JSON document that is not a listing object is."""
    if isinstance(doc, list):
        return "a JSON array, not a listing object"
    if isinstance(doc, dict):
        found = "a 'data' that is not a list" if "data" in doc else "no 'data' list"
        return f"a JSON object with {found}"
    return f"{_JSON_TYPES.get(type(doc), 'JSON')}, not a listing object"


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


@dataclass(frozen=True, slots=True)
class PageSummary:
    """What paging needs to know of a page fetched before (a checkpoint's, on --resume)."""

    empty: bool
    total_pages: int | None


# A failed page, or one recorded before without a summary: it ends no walk.
_UNKNOWN: Final = PageSummary(empty=False, total_pages=None)


class PagePlan:
    """Which page to fetch next, which fetched pages belong to the walk, and what was left.

    A page count the API reports (page 1's, or a larger one from a later page) is trusted up
    to ``max_pages``: pages 1..count are fetched in any order, released as they arrive, and
    an empty page among them ends nothing. Without a trusted count (none given, or one above
    ``max_pages``, which may be bogus: 10**9 must not cost 10**9 requests) the walk ends at
    the first empty page, and never passes ``max_pages``. Then pages are released in page
    order, so a page claimed past the end is dropped whatever the concurrency, and no worker
    claims more than ``window`` pages past the first one not yet in (bounded memory).
    """

    def __init__(
        self,
        first: Page,
        skip: Collection[int] | Mapping[int, PageSummary],
        max_pages: int,
        stop: StopSignal | None = None,
        *,
        window: int,
    ) -> None:
        self.max_pages = max_pages
        self.stop = stop
        self.window = window
        self.count: int | None = None  # the largest trusted page count seen
        self.reported: int | None = None  # the largest page count seen, trusted or not
        self.end: int | None = None  # the empty page that ended an uncounted walk
        self._skip = skip
        self._summaries = skip if isinstance(skip, Mapping) else {}
        self._next = 2
        self._frontier = 2  # the first page not yet released (ordered walks)
        self._held: dict[int, Page | None] = {}
        self._warned = False
        self._moved = asyncio.Event()
        self._observe(first.number, not first.records, first.total_pages)
        self.ordered = self.count is None
        if self.ordered:
            self._release()  # past the pages recorded before, or no worker could claim
        else:
            for number, summary in self._summaries.items():
                self._observe(number, summary.empty, summary.total_pages)

    @property
    def last(self) -> int:
        """The last page of the walk, as far as is known now."""
        if self.count is not None:
            return self.count
        if self.end is not None:
            return self.end
        return self.max_pages

    @property
    def known_total(self) -> int | None:
        """The number of pages, once known: a trusted count, or the pages before the end."""
        if self.count is not None:
            return self.count
        return None if self.end is None else self.end - 1

    def remaining(self) -> int:
        """Pages still to claim, at most."""
        return max(0, self.last - self._next + 1)

    async def claim(self) -> int | None:
        """The next page to fetch, or None when there is none (or a stop was asked)."""
        while True:
            if self.stop is not None and self.stop.is_set():
                return None  # asked to stop: no new pages, in-flight ones finish
            while self._next <= self.last and self._next in self._skip:
                self._next += 1
            number = self._next
            if number > self.last:
                return None
            if not self.ordered or number < self._frontier + self.window:
                self._next += 1
                return number
            moved = self._moved
            await moved.wait()

    def arrived(self, page: Page) -> list[Page]:
        """Take a fetched page; returns the pages now released, in the walk, to yield."""
        if not self.ordered:
            self._observe(page.number, not page.records, page.total_pages)
            return [page] if page.number <= self.last else []
        self._held[page.number] = page
        return self._release()

    def failed(self, number: int) -> list[Page]:
        """Note a page that failed for good; returns the pages that may now be released."""
        if not self.ordered:
            return []
        self._held[number] = None
        return self._release()

    def _release(self) -> list[Page]:
        """Walk the frontier over every page that is in, in order, up to the end."""
        released: list[Page] = []
        start = self._frontier
        while self._frontier <= self.last:
            number = self._frontier
            if number in self._held:
                page = self._held.pop(number)
                if page is None:
                    summary = _UNKNOWN
                else:
                    summary = PageSummary(not page.records, page.total_pages)
                    released.append(page)
            elif number in self._skip:
                summary = self._summaries.get(number, _UNKNOWN)
            else:
                break
            self._observe(number, summary.empty, summary.total_pages)
            self._frontier += 1
        if self._frontier > self.last:
            self._held.clear()  # claimed past the end: dropped, never yielded
        if self._frontier != start:
            self._moved.set()
            self._moved = asyncio.Event()
        return released

    def _observe(self, number: int, empty: bool, total: int | None) -> None:
        if total is not None:
            if self.reported is None or total > self.reported:
                self.reported = total
            if total <= self.max_pages:
                if self.count is None or total > self.count:
                    self.count = total
            elif not self._warned:
                self._warned = True
                log.warning(
                    "the API reports %d pages, more than max_pages=%d: paging until the first "
                    "empty page, never past max_pages",
                    total,
                    self.max_pages,
                )
        if empty and self.count is None and self.end is None:
            self.end = number

    def incomplete_reasons(self) -> list[str]:
        """Why the walk, though it ended, may have left pages unfetched (empty: it did not)."""
        if self.reported is not None and self.reported > self.max_pages:
            if self.end is None:
                return [f"the API reports {self.reported} pages; max_pages is {self.max_pages}"]
            return [
                f"the API reports {self.reported} pages (more than max_pages={self.max_pages}, "
                f"so not trusted), but page {self.end} was empty: paging stopped there"
            ]
        if self.count is None and self.end is None:
            return [
                f"page {self.max_pages} (max_pages) was not empty and the API reports no page "
                "count: more pages may follow; raise --max-pages"
            ]
        return []
