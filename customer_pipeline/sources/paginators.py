"""Paginators: how a unit becomes a request, and how a response becomes a page and a next step.

As dlt's ``rest_client/paginators.py`` does, each paginator turns state into the next request
(``request``) and a response into state (``read``: the records, the unit count, the next
cursor or URL); the source's loop knows nothing else. Ours adds one capability: once the
first page is in, ``random_access`` says whether every unit is addressable by its number
(page numbers, offsets, a Link header with ``rel="last"``), so the source fans out; if not,
the source follows the chain (``follows``), one unit after the other.

| paginator     | unit n is fetched with                       | the walk's size / next step    |
| ------------- | -------------------------------------------- | ------------------------------ |
| `page_number` | `page_param=n&size_param=per_page`           | total_pages_path or total_path |
| `offset`      | `offset_param=(n-1)*size&size_param=...`     | total_pages_path or total_path |
| `link`        | as page_number; a chain follows `rel="next"` | `rel="last"`'s page number     |
| `cursor`      | `cursor_param=<cursor>&size_param=...`       | the cursor at next_path        |
| `next_url`    | the URL at next_path (the first: resource)   | the URL at next_path           |

The size is per_page unless the first page shows that the server serves fewer (it says so
in its size key, or caps: fewer records than asked while its counts say more follow).
Only the parameters named here are sent: some servers (json-server 1.0) read any other one
as a filter. The API key goes only to base_url's origin: a next URL elsewhere ends the walk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, quote, urljoin, urlsplit

from ..errors import InvalidBodyError
from ..http import Request, clip, origin_of
from ..http.failures import NOT_A_LISTING
from ..settings import Settings
from .body import MISSING, BodyReader, as_count, dig, split_path
from .link import parse_link_header
from .units import Page, Unit

log = logging.getLogger("customer_pipeline.paging")

class ForeignNextError(Exception):
    """A chain's next URL is on another origin than base_url: not followed (the key stays)."""


class Paginator(Protocol):
    """Turns units into requests and responses into pages (see the module's table)."""

    @property
    def name(self) -> str:
        """The paginator setting's value for it."""
        ...

    @property
    def first(self) -> int:
        """The number of the walk's first unit."""
        ...

    @property
    def chain_only(self) -> bool:
        """Whether units are only ever reached one from the other (cursor, next URL)."""
        ...

    @property
    def page_size(self) -> int:
        """The records a full page holds (per_page, or what the first page showed)."""
        ...

    @property
    def body(self) -> BodyReader:
        """Where the records and counts are in a body."""
        ...

    def request(self, unit: Unit) -> Request:
        """The request that fetches ``unit``."""
        ...

    def read(self, unit: Unit, url: str, headers: Mapping[str, str], body: bytes) -> Page:
        """The page a 200 for ``unit`` (fetched from ``url``) holds; InvalidBodyError if none."""
        ...

    def random_access(self, first: Page) -> bool:
        """Whether, given the first page, every unit can be fetched by its number."""
        ...

    def follows(self, page: Page) -> Unit | None:
        """The unit after ``page`` in a chain; None at the end; ForeignNextError if refused."""
        ...


class _Listing:
    """What every paginator shares: the listing URL, the body reader, the page size."""

    name: ClassVar[str]
    chain_only: ClassVar[bool] = False
    # The response headers a page needs to be read again (from a checkpoint).
    kept_headers: ClassVar[tuple[str, ...]] = ()
    # Whether a page's next step is a URL (followed only on base_url's origin).
    next_is_url: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.url = settings.base_url + settings.resource
        self.origin = origin_of(settings.base_url)
        self.per_page = settings.per_page
        # What the server serves per page: per_page until the first page shows otherwise.
        self.page_size = settings.per_page
        self.body = BodyReader(settings)
        self.first = 1
        self._size_param = settings.size_param
        self._size = f"{_q(settings.size_param)}={settings.per_page}"

    def read(self, unit: Unit, url: str, headers: Mapping[str, str], body: bytes) -> Page:
        doc, records = self._parse(unit, body, url)
        return Page(unit.number, records, self._count(doc, headers, url), body, unit.state,
                    self._kept(headers), self._next(doc, headers, url),
                    self.body.record_count(doc))  # fmt: skip

    def _parse(self, unit: Unit, body: bytes, url: str) -> tuple[Any, list[Any]]:
        """The document and its records; the first unit also tells the served page size."""
        doc, records = self.body.parse(body, url)
        if unit.number == self.first and unit.state is None:
            served = self.body.served_size(doc, len(records))
            size = served or self.per_page
            if size != self.page_size:
                log.warning("the API serves %d records per page though %s=%d asks for %d: "
                            "paging by %d", size, self._size_param, self.per_page,
                            self.per_page, size)  # fmt: skip
            self.page_size = size
        return doc, records

    def random_access(self, first: Page) -> bool:
        return True

    def follows(self, page: Page) -> Unit | None:
        if page.next is None:
            return None
        if self.next_is_url:
            return Unit(page.number + 1, self._same_origin(page.number + 1, page.next))
        return Unit(page.number + 1, page.next)

    def _count(self, doc: Any, headers: Mapping[str, str], url: str) -> int | None:
        return self.body.page_count(doc, self.page_size)

    def _next(self, doc: Any, headers: Mapping[str, str], url: str) -> str | None:
        return None

    def _kept(self, headers: Mapping[str, str]) -> dict[str, str] | None:
        if not self.kept_headers:
            return None
        kept = {name: headers[name] for name in self.kept_headers if name in headers}
        return kept or None

    def _same_origin(self, number: int, url: str) -> str:
        """``url``, if it is on base_url's origin; else ForeignNextError."""
        if origin_of(url) != self.origin:
            raise ForeignNextError(
                f"the next URL after page {number - 1}, {clip(url, 120)}, is not on "
                f"{self.origin} (base_url's origin) and the API key is sent nowhere else: "
                "the walk stops there; if it is the API's own address, make it --base-url"
            )
        return url


class PageNumber(_Listing):
    """``page_param=n&size_param=per_page`` from ``first_page``: reqres, json-server 1.0."""

    name = "page_number"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.first = settings.first_page
        self._prefix = f"{self.url}?{_q(settings.page_param)}="
        self._suffix = "&" + self._size

    def request(self, unit: Unit) -> Request:
        return Request(f"{self._prefix}{unit.number}{self._suffix}", f"page {unit.number}")


class Offset(_Listing):
    """``offset_param=(n-1)*per_page&size_param=per_page``; the size from total_path."""

    name = "offset"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._prefix = f"{self.url}?{_q(settings.offset_param)}="
        self._suffix = "&" + self._size

    def request(self, unit: Unit) -> Request:
        offset = (unit.number - 1) * self.page_size
        return Request(f"{self._prefix}{offset}{self._suffix}",
                       f"page {unit.number} (offset {offset})")  # fmt: skip


class Link(PageNumber):
    """Pages by number with an RFC 8288 ``Link`` header: fans out when ``rel="last"`` gives
    the page count, else follows ``rel="next"`` (json-server 0.17, GitHub)."""

    name = "link"
    kept_headers = ("link",)
    next_is_url = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.page_param = settings.page_param

    def request(self, unit: Unit) -> Request:
        if unit.state is None:
            return super().request(unit)
        return Request(unit.state, f"page {unit.number}")

    def read(self, unit: Unit, url: str, headers: Mapping[str, str], body: bytes) -> Page:
        doc, records = self._parse(unit, body, url)
        header = headers.get("link", "")
        links = parse_link_header(header, url)
        if not links and header.strip():
            # Not an end (json-server's last page sends an empty Link): a header we cannot
            # read would end the walk silently.
            raise InvalidBodyError(f"{NOT_A_LISTING}{url} has a Link header that is not RFC "
                                   f"8288 (<url>; rel=\"next\"): {clip(repr(header), 80)}",
                                   url=url, status=200)  # fmt: skip
        count = self._last_page(links.get("last"))
        if count is None:
            count = self.body.page_count(doc, self.page_size)
        return Page(unit.number, records, count, body, unit.state, self._kept(headers),
                    links.get("next"), self.body.record_count(doc))  # fmt: skip

    def random_access(self, first: Page) -> bool:
        return first.total_pages is not None and first.state is None

    def _last_page(self, last: str | None) -> int | None:
        """The page count a ``rel="last"`` URL gives, when it carries the page parameter."""
        if last is None:
            return None
        values = parse_qs(urlsplit(last).query).get(self.page_param, [])
        number = as_count(values[0]) if len(values) == 1 else None
        if number is None or number < self.first:
            return None
        return number - self.first + 1


class _Chain(_Listing):
    """A body-driven chain: the first page at the resource, the next step at next_path."""

    chain_only = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.next_path = split_path(settings.next_path)
        self._next_name = settings.next_path
        self._first = f"{self.url}?{self._size}"

    def random_access(self, first: Page) -> bool:
        return False

    def _next_value(self, doc: Any) -> Any:
        """What next_path holds; None when the chain ends there (missing, null or empty)."""
        value = dig(doc, self.next_path)
        return None if value is MISSING or value == "" else value


class Cursor(_Chain):
    """``cursor_param=<cursor>&size_param=per_page``; the next cursor at next_path."""

    name = "cursor"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._prefix = f"{self.url}?{_q(settings.cursor_param)}="

    def request(self, unit: Unit) -> Request:
        if unit.state is None:
            return Request(self._first, f"page {unit.number}")
        return Request(f"{self._prefix}{_q(unit.state)}&{self._size}",
                       f"page {unit.number} (cursor {clip(unit.state, 40)})")  # fmt: skip

    def _next(self, doc: Any, headers: Mapping[str, str], url: str) -> str | None:
        value = self._next_value(doc)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise _bad_next(url, self._next_name, "a cursor (a string or a number)")


class NextUrl(_Chain):
    """The first page at the resource, every next one at the URL found at next_path."""

    name = "next_url"
    next_is_url = True

    def request(self, unit: Unit) -> Request:
        if unit.state is None:
            return Request(self._first, f"page {unit.number}")
        return Request(unit.state, f"page {unit.number}")

    def _next(self, doc: Any, headers: Mapping[str, str], url: str) -> str | None:
        value = self._next_value(doc)
        if value is None:
            return None
        if isinstance(value, str):
            return urljoin(url, value.strip())
        raise _bad_next(url, self._next_name, "a URL")


def _bad_next(url: str, path: str, wanted: str) -> InvalidBodyError:
    return InvalidBodyError(f"{NOT_A_LISTING}{url} is a JSON object whose '{path}' is not "
                            f"{wanted}", url=url, status=200)  # fmt: skip


def _q(text: str) -> str:
    """A query parameter name or value, percent-encoded."""
    return quote(text, safe="")


PAGINATORS: dict[str, Callable[[Settings], Paginator]] = {
    "page_number": PageNumber,
    "offset": Offset,
    "link": Link,
    "cursor": Cursor,
    "next_url": NextUrl,
}


def make_paginator(settings: Settings) -> Paginator:
    """The paginator the settings name."""
    return PAGINATORS[settings.paginator](settings)
