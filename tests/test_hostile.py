"""Hostile and broken responses: none crashes the run or loses a good record."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from customer_pipeline import (
    ApiUnreachableError,
    ReqresClient,
    ResponseTooLargeError,
    run_pipeline,
)

from .conftest import BASE_URL, fast_settings

USERS = f"{BASE_URL}/api/users"


def user(i: int, **fields: Any) -> dict[str, Any]:
    base = {"id": i, "email": f"u{i}@x.io", "first_name": "Ann", "last_name": "Lee",
            "avatar": f"https://x.io/{i}.png"}  # fmt: skip
    base.update(fields)
    return base


def api(pages: dict[int, Callable[[], httpx.Response]]) -> respx.MockRouter:
    router = respx.mock(assert_all_called=False)

    def answer(request: httpx.Request) -> httpx.Response:
        return pages[int(request.url.params["page"])]()

    router.get(USERS).mock(side_effect=answer)
    return router


def ok(*records: Any, total_pages: Any = 3) -> Callable[[], httpx.Response]:
    body = orjson.dumps({"total_pages": total_pages, "data": list(records)})
    return lambda: httpx.Response(200, content=body)


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@pytest.mark.parametrize(
    "bad",
    [
        lambda: httpx.Response(200, text="<html><body>Maintenance</body></html>"),
        lambda: httpx.Response(200, text="not json at all"),
        lambda: httpx.Response(200, json={"data": {"id": 1}}),  # data not a list
        lambda: httpx.Response(200, json={"data": "users"}),
        lambda: httpx.Response(200, json=[1, 2, 3]),  # not an envelope
        lambda: httpx.Response(200, content=b'{"data": [' + b"[" * 5000 + b"]" * 5000 + b"]}"),
    ],
)
async def test_broken_200_bodies_fail_only_their_page(
    tmp_path: Path, bad: Callable[[], httpx.Response]
) -> None:
    with api({1: ok(user(1)), 2: bad, 3: ok(user(3))}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=2))
    assert result.failed_pages == [2] and result.exit_code == 3
    assert [c["customer_id"] for c in load(result.customers_path)["customers"]] == [1, 3]


@pytest.mark.parametrize(
    ("total_pages", "fetched"),
    [(-4, [1, 2, 3]), ("3", [1, 2, 3]), ("three", [1, 2, 3]), (10**9, [1, 2, 3]),
     (None, [1, 2, 3]), (True, [1, 2, 3])],
)  # fmt: skip
async def test_envelope_with_wrong_types_is_paged_safely(
    total_pages: Any, fetched: list[int]
) -> None:
    def page(n: int) -> Callable[[], httpx.Response]:
        records = [user(n)] if n <= 3 else []
        return ok(*records, total_pages=total_pages)

    seen: list[int] = []
    async with ReqresClient(fast_settings(concurrency=1)) as client:
        with api({n: page(n) for n in range(1, 10)}):
            async for p in client.iter_pages():
                seen.append(p.number)
    assert [n for n in seen if n <= 3] == fetched
    assert max(seen) <= 5  # walked to the first empty page, not to 10**9


async def test_odd_records_are_rejected_or_kept_never_crash(tmp_path: Path) -> None:
    records = [
        user(1),
        "just a string",
        [1, 2],
        None,
        42,
        user("7"),  # integral string: kept as 7
        user(" 8 "),
        user(9.0),  # a float is not an integer id
        user(True),
        user(-3),
        user(0),
        user(10**19),  # beyond 2**63-1
        user("1e3"),
        {"email": "no-id@x.io"},
        user(11, meta={"deep": [[[[[[[[[[{"x": 1}]]]]]]]]]]}),
    ]
    with api({1: ok(*records, total_pages=1)}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path))
    kept = [c["customer_id"] for c in load(result.customers_path)["customers"]]
    assert kept == [1, 7, 8, 11]
    assert result.rejected == len(records) - 4
    lines = [orjson.loads(line) for line in result.rejected_path.read_bytes().splitlines()]
    assert [line["position"] for line in lines] == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13]
    assert lines[0] == {"page": 1, "position": 1, "reason": "record is not a JSON object",
                        "record": "just a string"}  # fmt: skip
    assert all(line["reason"] for line in lines)


async def test_huge_strings_control_characters_and_unicode_survive(tmp_path: Path) -> None:
    big = "x" * 1_000_000
    weird = "Zo\u00eb \u202e\u0000\u0007\t\u2028 \U0001f600 \u05e9\u05dc\u05d5\u05dd"
    records = [user(1, first_name=big), user(2, last_name=weird, email=f"{big}@x.io"),
               user(3, first_name="\ud800" if False else "Ok")]  # fmt: skip
    with api({1: ok(*records, total_pages=1)}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path))
    out = {c["customer_id"]: c for c in load(result.customers_path)["customers"]}
    assert out[1]["first_name"] == big and out[1]["data_quality_score"] == 100
    assert out[2]["last_name"] == weird.strip()
    assert out[2]["email_domain"] == "x.io"
    assert len(out) == 3


async def test_body_over_max_response_bytes_is_refused_by_content_length() -> None:
    body = orjson.dumps({"total_pages": 1, "data": [user(1, first_name="x" * 20_000)]})
    with respx.mock:
        route = respx.get(USERS).mock(return_value=httpx.Response(200, content=body))
        async with ReqresClient(fast_settings(max_response_bytes=10_000)) as client:
            with pytest.raises(ResponseTooLargeError, match="max_response_bytes"):
                await client.fetch_page(1)
    assert route.call_count == 1  # not retried: it would only be as large again


async def serve_raw(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Any:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Any) -> str:
        server, url = await serve_raw(handler)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_chunked_body_over_the_limit_is_refused_without_buffering_it(
    raw_server: Callable[..., Any],
) -> None:
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        try:
            for _ in range(320):  # 20 MB, if anyone read it all
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    url = await raw_server(endless)
    for transport in ("aiohttp", "httpx"):
        sent = 0
        settings = fast_settings(base_url=url, max_response_bytes=200_000, transport=transport)
        async with ReqresClient(settings) as client:
            with pytest.raises(ResponseTooLargeError):
                await client.fetch_page(1)
        assert client.stats.bytes_received == 0
        assert sent < 20_000_000  # we hung up long before the end


async def test_a_server_that_never_answers_times_out(raw_server: Callable[..., Any]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read, never answer

    url = await raw_server(silent)
    settings = fast_settings(base_url=url, timeout=0.2, max_retries=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with ReqresClient(settings) as client:
        with pytest.raises(ApiUnreachableError, match="Timeout"):
            await client.fetch_page(1)
    assert loop.time() - started < 3


def test_nothing_listens_fails_fast_with_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    async def go() -> None:
        async with ReqresClient(fast_settings(base_url=url, max_retries=1)) as client:
            await client.fetch_page(1)

    with pytest.raises(ApiUnreachableError, match=f"127.0.0.1:{port}/api/users"):
        asyncio.run(go())
