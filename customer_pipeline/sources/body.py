"""Reading a listing body: the records at ``data_path``, the counts, the next step, the fields.

Pure functions and small immutable readers, shared by the paginators and the checkpoint's
replay. A body that is not what the settings describe raises InvalidBodyError (retried: a
truncated 200 is the usual cause) with a few words on what it is instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..errors import InvalidBodyError
from ..http import clip
from ..http.failures import NOT_A_LISTING
from ..settings import CUSTOMER_FIELDS, Settings

MISSING: Final = object()
_JSON_TYPES: Final = {str: "a JSON string", int: "a JSON number", float: "a JSON number",
                      bool: "JSON true or false", type(None): "JSON null"}  # fmt: skip


def split_path(path: str) -> tuple[str, ...]:
    """A dotted path as its keys; the empty path is the document itself."""
    return tuple(path.split(".")) if path else ()


def dig(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested objects, or MISSING."""
    for key in path:
        if not isinstance(doc, dict):
            return MISSING
        doc = doc.get(key, MISSING)
        if doc is MISSING:
            return MISSING
    return doc


def as_count(value: Any) -> int | None:
    """A non-negative integer from a body, or None if it is not one."""
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


class BodyReader:
    """Where the records and the counts are in a body, as the settings say."""

    def __init__(self, settings: Settings) -> None:
        self.data_path = split_path(settings.data_path)
        self.total_pages_path = split_path(settings.total_pages_path)
        self.total_path = split_path(settings.total_path)
        self.size_key = settings.size_param
        self.per_page = settings.per_page
        self._data_name = settings.data_path

    def parse(self, body: bytes, url: str) -> tuple[Any, list[Any]]:
        """The document and its records; InvalidBodyError if the body is not a listing."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            problem = _not_json(body, exc)
        else:
            records = dig(doc, self.data_path) if self.data_path else doc
            if isinstance(records, list):
                return doc, records
            problem = self._not_a_listing(doc)
            doc = None  # the error's traceback would keep what orjson made of a bad body
        # Raised out here, not in the except: a JSONDecodeError holds the whole body as
        # text, and as this error's context it would live as long as this error.
        raise InvalidBodyError(f"{NOT_A_LISTING}{url} is {problem}", url=url, status=200)

    def records_as_sent(self, body: bytes) -> list[Any] | None:
        """The records read again by the stdlib, which keeps integers wider than 64 bits."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return None
        records = dig(doc, self.data_path) if self.data_path else doc
        return records if isinstance(records, list) else None

    def page_count(self, doc: Any, size: int) -> int | None:
        """The number of pages the body reports: its page count, or its record count / size.

        ``size`` is the page size the walk learned (see ``served_size``); a size the body
        states (reqres: per_page) knows better than either.
        """
        if not isinstance(doc, dict):
            return None
        pages = as_count(dig(doc, self.total_pages_path)) if self.total_pages_path else None
        if pages is not None:
            return pages
        total = self.record_count(doc)
        if total is None:
            return None
        size = as_count(doc.get(self.size_key)) or size
        return -(-total // size)

    def record_count(self, doc: Any) -> int | None:
        """The number of records the body reports, if it does."""
        if not isinstance(doc, dict) or not self.total_path:
            return None
        return as_count(dig(doc, self.total_path))

    def served_size(self, doc: Any, served: int) -> int | None:
        """The page size a first page shows, when it is not the one asked for; else None.

        A body may state it (its size key); or a server that caps the page size sends fewer
        records than asked on a page that is not the last: fewer than per_page, while the
        counts say more follow. Offsets and the page count must then go by what it serves,
        or the records between are never asked for.
        """
        if not isinstance(doc, dict):
            return None
        stated = as_count(doc.get(self.size_key))
        if stated:
            return stated if stated != self.per_page else None
        if not 0 < served < self.per_page:
            return None
        total = self.record_count(doc)
        pages = as_count(dig(doc, self.total_pages_path)) if self.total_pages_path else None
        more = (total is not None and total > served) or (pages is not None and pages > 1)
        return served if more else None

    def _not_a_listing(self, doc: Any) -> str:
        """What a JSON document without the records list is."""
        if not self.data_path:
            if isinstance(doc, dict):
                return "a JSON object, not a list of records (data_path is empty)"
            return f"{_JSON_TYPES.get(type(doc), 'JSON')}, not a list of records"
        if isinstance(doc, list):
            return "a JSON array, not a listing object"
        if isinstance(doc, dict):
            name = self._data_name
            found = dig(doc, self.data_path) is not MISSING
            what = f"a '{name}' that is not a list" if found else f"no '{name}' list"
            return f"a JSON object with {what}"
        return f"{_JSON_TYPES.get(type(doc), 'JSON')}, not a listing object"


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


class FieldMap:
    """Moves nested fields onto the customer's field names before the rules see a record.

    ``field`` maps a customer field (id, email, first_name, last_name, avatar) to a dotted
    path; a field it does not name is read under its own name. The rules get a new object
    with just those fields; the record as sent is what a reject keeps.
    """

    def __init__(self, paths: Mapping[str, str]) -> None:
        self.paths = tuple((name, split_path(paths.get(name, name))) for name in CUSTOMER_FIELDS)

    def __call__(self, record: Any) -> Any:
        """``record`` with the customer fields where the rules look for them."""
        if not isinstance(record, dict):
            return record  # the rules reject it as it is
        shaped = {}
        for name, path in self.paths:
            value = dig(record, path)
            if value is not MISSING:
                shaped[name] = value
        return shaped


def field_map(settings: Settings) -> FieldMap | None:
    """The field map the settings ask for; None when every field is under its own name."""
    if all(path == name for name, path in settings.field.items()):
        return None
    return FieldMap(settings.field)


class Records:
    """How the stages get customers' fields out of a page's records, and the records as sent."""

    def __init__(self, body: BodyReader, shape: FieldMap | None) -> None:
        self.body = body
        self.shape = shape

    def as_sent(self, page_body: bytes, records: list[Any]) -> list[Any]:
        """The records read again by the stdlib (wide integers whole); ``records`` if it fails.

        Only for a page with a rejected float id, so the hot path never pays for it.
        """
        again = self.body.records_as_sent(page_body)
        return again if again is not None else records
