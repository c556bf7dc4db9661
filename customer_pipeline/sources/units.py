"""Units of a walk: what a source fetches one at a time, and the pages they bring back.

A unit is identified by its number in the walk (the page number, for page-numbered sources)
and, in a chain, by the state needed to fetch it again (the cursor or the URL), so a
checkpoint row, a dedup rank, a reject and a failure all carry the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson


class StopSignal(Protocol):
    """Something to ask a run to stop: an asyncio.Event or an anyio.Event."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Unit:
    """One step of a walk: its number, and the cursor or URL that fetches it (chains only)."""

    number: int
    state: str | None = None


@dataclass(slots=True)
class Page:
    """One unit as the API sent it: its number and its raw records.

    ``total_pages`` is the number of units this answer reports (None if it says nothing);
    ``body``, ``state`` and ``headers`` are what a checkpoint keeps to read it again;
    ``next`` is the next cursor or URL a chain follows (None at the end);
    ``total_records`` is the record count the answer reports (None if it says nothing).
    """

    number: int
    records: list[Any]
    total_pages: int | None
    body: bytes = b""  # as received, for the checkpoint
    state: str | None = None
    headers: Mapping[str, str] | None = None
    next: str | None = None
    total_records: int | None = None


@dataclass(frozen=True, slots=True)
class Shard:
    """A contiguous range of a fan-out's units, ``lo`` to ``hi`` (None: to the walk's end).

    ``first`` is the walk's first page, fetched once by whoever planned the shards: every
    shard learns the unit count from it, and the shard whose range holds it yields it.
    """

    first: Page
    lo: int
    hi: int | None

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int) or number < self.lo:
            return False
        return self.hi is None or number <= self.hi


class Walk(Protocol):
    """What a finished walk tells the run: a Source's, or a cluster's over its shards."""

    @property
    def failed(self) -> Mapping[int, object]: ...

    @property
    def total_units(self) -> int | None: ...

    @property
    def not_retried(self) -> list[int]: ...

    def incomplete_reasons(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class PageSummary:
    """What a walk needs to know of a page fetched before (a checkpoint's, on --resume)."""

    empty: bool
    total_pages: int | None
    digest: int | None = None
    size: int | None = None  # its records, as sent (None: not known)


# A failed page, or one recorded before without a summary: it ends no walk.
UNKNOWN: Final = PageSummary(empty=False, total_pages=None)


def digest(records: list[Any]) -> int | None:
    """A fingerprint of a page's records, to see a page that repeats the one before."""
    try:
        return hash(orjson.dumps(records))
    except orjson.JSONEncodeError:  # deeper than orjson writes: such a page never "repeats"
        return None


def summarize(page: Page) -> PageSummary:
    """What a walk keeps of ``page``."""
    return PageSummary(not page.records, page.total_pages, digest(page.records), len(page.records))


class Recorded:
    """The pages a checkpoint held, as a resumed walk needs them (not their records)."""

    def __init__(self) -> None:
        self.summaries: dict[int, PageSummary] = {}
        self.last: Page | None = None  # the highest-numbered page: a chain goes on from it
        self.complete = False
        self.total: int | None = None
        self.reported: int | None = None  # the record count the lowest page reported
        self.size: int | None = 0  # the records of every page replayed (None: not known)
        self._lowest: int | None = None

    def add(self, page: Page) -> None:
        """Remember one replayed page."""
        self.summaries[page.number] = summarize(page)
        if self.size is not None:
            self.size += len(page.records)
        if self._lowest is None or page.number < self._lowest:
            self._lowest = page.number
            self.reported = page.total_records
        if self.last is None or page.number > self.last.number:
            self.last = Page(page.number, page.records, page.total_pages, b"", page.state,
                             page.headers, page.next, page.total_records)  # fmt: skip

    def finish(self, total: int | None) -> None:
        """The checkpoint is of a finished run: nothing is left to fetch."""
        self.complete = True
        self.total = total
