"""A small raw-asyncio HTTP/1.1 server whose answer to each listing page is scripted.

    async with hostile_server({1: listing([user(1)], total_pages=2), 2: html_page()}) as url:
        ...  # url is "http://127.0.0.1:<free port>"

``pages`` maps a page number (the ``page`` query parameter; 0 when there is none) to a
``Reply``, or is a callable ``page -> Reply`` (keep a counter in it to answer retries
differently). Pages missing from a mapping get ``default`` (an empty listing). Every answer
closes its connection, so each attempt is a fresh request. ``seen``, if given, receives the
page number of every request. The server and every connection it holds are closed when the
block ends, dribbling ones included.

The builders below cover the usual hostile answers: ``listing``, ``json_page``,
``bare_array``, ``html_page``, ``short_body`` (Content-Length larger than the body),
``gzip_bomb``, ``redirect``, ``raw`` (any bytes, status line included), and
``dribble(reply, "headers" | "body")`` (one byte per ``interval`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = [
    "Reply",
    "bare_array",
    "dribble",
    "gzip_bomb",
    "hostile_server",
    "html_page",
    "json_page",
    "listing",
    "raw",
    "redirect",
    "short_body",
    "user",
]

REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect",
           404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, headers and body, or ``raw_bytes`` sent exactly as given.

    ``content_length`` overrides the Content-Length header (None: the body's real length).
    ``slow`` dribbles the headers or the body one byte per ``interval`` of the server.
    """

    status: int = 200
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = (("Content-Type", "application/json"),)
    content_length: int | None = None
    slow: Literal["headers", "body"] | None = None
    raw_bytes: bytes | None = None

    def head(self) -> bytes:
        """The status line and headers, as sent."""
        length = len(self.body) if self.content_length is None else self.content_length
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Whatever')}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {length}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1")


def user(i: int, **fields: Any) -> dict[str, Any]:
    """A complete, valid raw user with id ``i``; ``fields`` override or add fields."""
    base = {"id": i, "email": f"u{i}@x.io", "first_name": "Ann", "last_name": "Lee",
            "avatar": f"https://x.io/{i}.png"}  # fmt: skip
    base.update(fields)
    return base


def json_page(doc: Any, *, status: int = 200) -> Reply:
    """Any JSON document as the body."""
    return Reply(status=status, body=orjson.dumps(doc))


def listing(records: Sequence[Any], **envelope: Any) -> Reply:
    """A reqres listing page: ``{**envelope, "data": records}``."""
    return json_page({**envelope, "data": list(records)})


def bare_array(records: Sequence[Any]) -> Reply:
    """Valid JSON, but a bare array rather than a listing object."""
    return json_page(list(records))


def html_page(text: str = "Maintenance") -> Reply:
    """A 200 that is an HTML page (a captive portal, a maintenance page)."""
    body = f"<!DOCTYPE html><html><body><h1>{text}</h1></body></html>".encode()
    return Reply(body=body, headers=(("Content-Type", "text/html; charset=utf-8"),))


def short_body(body: bytes, declared: int) -> Reply:
    """Declares ``declared`` bytes of Content-Length, sends ``body`` and hangs up."""
    return Reply(body=body, content_length=declared)


@functools.lru_cache(maxsize=8)
def _deflated_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed a megabyte at a time (never held inflated)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip header and trailer
    block = bytes(1 << 20)
    parts = []
    for start in range(0, size, len(block)):
        parts.append(packer.compress(block[: min(len(block), size - start)]))
    parts.append(packer.flush())
    return b"".join(parts)


def gzip_bomb(inflated_bytes: int = 1 << 30) -> Reply:
    """A small gzip body (about 1 KB per MB) that inflates to ``inflated_bytes`` of zeros."""
    return Reply(
        body=_deflated_zeros(inflated_bytes),
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
    )


def redirect(location: str, status: int = 302) -> Reply:
    """A 3xx pointing at ``location``."""
    return Reply(status=status, headers=(("Location", location),))


def raw(data: bytes) -> Reply:
    """Exactly these bytes (status line and headers included), then the connection closes."""
    return Reply(raw_bytes=data)


def dribble(reply: Reply, part: Literal["headers", "body"] = "body") -> Reply:
    """``reply`` with its headers or its body sent one byte per interval."""
    return replace(reply, slow=part)


EMPTY_LISTING = listing([])


@contextlib.asynccontextmanager
async def hostile_server(
    pages: Mapping[int, Reply] | Callable[[int], Reply],
    *,
    default: Reply = EMPTY_LISTING,
    interval: float = 0.001,
    seen: list[int] | None = None,
) -> AsyncIterator[str]:
    """Serve ``pages`` on a free loopback port; yields the base URL."""
    if callable(pages):
        answer = pages
    else:
        script = pages

        def answer(page: int) -> Reply:
            return script.get(page, default)

    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode("latin-1")
            number = parse_qs(urlsplit(target).query).get("page", ["0"])[0]
            page = int(number) if number.isdigit() else 0
            if seen is not None:
                seen.append(page)
            await _send(writer, answer(page), interval)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up first: that is what many of these tests want
        finally:
            connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()


async def _send(writer: asyncio.StreamWriter, reply: Reply, interval: float) -> None:
    """Write one reply, dribbling the part it asks for."""
    if reply.raw_bytes is not None:
        writer.write(reply.raw_bytes)
        await writer.drain()
        return
    for part, data in (("headers", reply.head()), ("body", reply.body)):
        if reply.slow == part:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(interval)
        else:
            writer.write(data)
            await writer.drain()
