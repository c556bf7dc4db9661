"""Pagination styles: how a listing request becomes a body (and a Link header).

Every style serves windows of the same dataset (``Dataset.window_records``), so a client
that pulls any style gets the same users in the same order. Each style renders a body once
per distinct request and caches it: the benchmarks serve 10,000 pages from here.

| style         | request                  | where the next step is                      |
| ------------- | ------------------------ | ------------------------------------------- |
| `page_number` | `?page=&per_page=`       | `total_pages` in the reqres envelope        |
| `offset`      | `?offset=&limit=`        | `total` in `{offset, limit, total, data}`   |
| `cursor`      | `?cursor=&per_page=`     | `meta.next_cursor` (opaque; null at the end)|
| `link`        | `?page=&per_page=`       | RFC 8288 `Link` header, `rel="next"`/`last` |
| `next_url`    | `?page=&per_page=`       | `links.next`, an absolute URL (null at end) |
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from .config import SimulatorConfig
from .dataset import Dataset

RESOURCE = "/api/users"
MAX_PAGE_SIZE = 10_000
# Big enough for the benchmarks' 10,000 pages: rendering must never be the bottleneck.
CACHE_SIZE = 16_384
SUPPORT = {
    "url": "https://contentcaddy.io?utm_source=reqres&utm_medium=json&utm_campaign=referral",
    "text": "Tired of writing endless social media content? Let Content Caddy generate it for you.",
}
_CURSOR_TAG = b"after:"


class BadQuery(ValueError):
    """A listing request the style cannot answer: a 400 with this message."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A listing answer: the JSON body and any extra headers."""

    body: bytes
    headers: Mapping[str, str] | None = None


class Style:
    """One pagination style: query parameters in, a cached reply out."""

    # Each style's renderer, a pure function of its arguments: cached per distinct request.
    _render: Callable[..., Reply]

    def __init__(self, config: SimulatorConfig, dataset: Dataset) -> None:
        self.config = config
        self.dataset = dataset
        self.bare = config.bare
        self._cached: Callable[..., Reply] = lru_cache(maxsize=CACHE_SIZE)(self._render)

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        """The answer to ``GET /api/users?<query>`` on a server reached at ``origin``."""
        raise NotImplementedError

    def _page(self, query: Mapping[str, str]) -> tuple[int, int]:
        """(page, per_page) of a page-numbered request, clamped to the last page if asked."""
        per_page = _size(query, "per_page", self.config.per_page)
        page = _int(query, "page", 1)
        if self.config.clamp:
            page = min(page, self._last_page(per_page))
        return page, per_page

    def _last_page(self, per_page: int) -> int:
        return max(1, self.dataset.total_pages(per_page))

    def _dump(self, data: list[Any], envelope: dict[str, Any]) -> bytes:
        return orjson.dumps(data if self.bare else envelope)


class PageNumber(Style):
    """``?page=&per_page=`` answered with the reqres envelope: today's reqres behaviour."""

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        return self._cached(*self._page(query))

    def _render(self, page: int, per_page: int) -> Reply:
        data = self.dataset.page_records(page, per_page)
        envelope = {
            "page": page,
            "per_page": per_page,
            "total": self.dataset.total,
            "total_pages": self.dataset.total_pages(per_page),
            "data": data,
            "support": SUPPORT,
        }
        return Reply(self._dump(data, envelope))


class Offset(Style):
    """``?offset=&limit=`` answered with ``{offset, limit, total, data}``."""

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        limit = _size(query, "limit", self.config.per_page)
        offset = _int(query, "offset", 0)
        if offset < 0:
            raise BadQuery(f"offset must be >= 0, got {offset}")
        total = self.dataset.total
        if self.config.clamp and offset >= total > 0:
            # Step back on the client's own grid, so the repeat equals the page it saw last.
            offset -= -(-(offset - total + 1) // limit) * limit
        return self._cached(offset, limit)

    def _render(self, offset: int, limit: int) -> Reply:
        data = self.dataset.window_records(offset, limit)
        envelope = {"offset": offset, "limit": limit, "total": self.dataset.total, "data": data}
        return Reply(self._dump(data, envelope))


class Cursor(Style):
    """``?cursor=&per_page=``: the next cursor at ``meta.next_cursor``; no totals."""

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        per_page = _size(query, "per_page", self.config.per_page)
        token = query.get("cursor")
        return self._cached(decode_cursor(token) if token else 0, per_page)

    def _render(self, start: int, per_page: int) -> Reply:
        data = self.dataset.window_records(start, per_page)
        following = start + per_page
        token = encode_cursor(following) if following < self.dataset.total else None
        return Reply(orjson.dumps({"data": data, "meta": {"next_cursor": token}}))


class Link(Style):
    """``?page=&per_page=`` with an RFC 8288 ``Link`` header; a bare list unless asked."""

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        return self._cached(origin, *self._page(query))

    def _render(self, origin: str, page: int, per_page: int) -> Reply:
        data = self.dataset.page_records(page, per_page)
        last = self._last_page(per_page)
        rels = [("first", 1)]
        if page > 1:
            rels.append(("prev", page - 1))
        if page < last:
            rels.append(("next", page + 1))
        if self.config.link_last:
            rels.append(("last", last))
        link = ", ".join(f'<{page_url(origin, n, per_page)}>; rel="{rel}"' for rel, n in rels)
        return Reply(self._dump(data, {"data": data}), {"Link": link})


class NextUrl(Style):
    """``?page=&per_page=``; the body carries the absolute next URL at ``links.next``."""

    def reply(self, query: Mapping[str, str], origin: str) -> Reply:
        return self._cached(origin, *self._page(query))

    def _render(self, origin: str, page: int, per_page: int) -> Reply:
        data = self.dataset.page_records(page, per_page)
        more = page < self.dataset.total_pages(per_page)
        following = page_url(origin, max(page, 0) + 1, per_page) if more else None
        return Reply(orjson.dumps({"data": data, "links": {"next": following}}))


STYLES: dict[str, type[Style]] = {
    "page_number": PageNumber,
    "offset": Offset,
    "cursor": Cursor,
    "link": Link,
    "next_url": NextUrl,
}


def make_style(config: SimulatorConfig, dataset: Dataset) -> Style:
    """The style the config asks for, serving ``dataset``."""
    return STYLES[config.pagination](config, dataset)


def page_url(origin: str, page: int, per_page: int) -> str:
    """The absolute URL of one listing page."""
    return f"{origin}{RESOURCE}?page={page}&per_page={per_page}"


def encode_cursor(position: int) -> str:
    """An opaque cursor for the window starting after ``position`` users."""
    return base64.urlsafe_b64encode(_CURSOR_TAG + str(position).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    """The position a cursor from ``encode_cursor`` stands for; BadQuery for any other."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    number = raw.removeprefix(_CURSOR_TAG)
    if number == raw or not number.isdigit():
        raise BadQuery("cursor is not one this server gave out: start again without a cursor")
    return int(number)


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {raw!r}") from None


def _size(query: Mapping[str, str], name: str, default: int) -> int:
    value = _int(query, name, default)
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise BadQuery(f"{name} must be between 1 and {MAX_PAGE_SIZE}")
    return value
