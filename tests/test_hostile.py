"""Hostile and broken responses: none crashes the run or loses a good record."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import aiohttp.abc
import httpx
import orjson
import pytest
import respx

from customer_pipeline import (
    ApiUnreachableError,
    PageFetchError,
    PipelineError,
    ReqresClient,
    ResponseTooLargeError,
    run_pipeline,
)
from customer_pipeline.http.transport import SeamTransport

from .conftest import BASE_URL, fast_settings
from .hostile_server import (
    Reply,
    bare_array,
    dribble,
    gzip_bomb,
    hostile_server,
    html_page,
    json_page,
    listing,
    raw,
    redirect,
    short_body,
    user,
)

USERS = f"{BASE_URL}/api/users"
GZIP = (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))


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
        user(" 8 "),  # not canonical: rejected, so it cannot merge with an 8
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
    assert kept == [1, 7, 11]
    assert result.rejected == len(records) - 3
    lines = [orjson.loads(line) for line in result.rejected_path.read_bytes().splitlines()]
    assert [line["position"] for line in lines] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]
    assert lines[0] == {"page": 1, "position": 1, "reason": "record is not a JSON object",
                        "record": "just a string"}  # fmt: skip
    assert all(line["reason"] for line in lines)


async def test_huge_strings_control_characters_and_unicode_survive(tmp_path: Path) -> None:
    big = "x" * 1_000_000
    weird = "Zo\u00eb \u202e\u0000\u0007\t\u2028 \U0001f600 \u05e9\u05dc\u05d5\u05dd"
    records = [user(1, first_name=big), user(2, last_name=weird, email=f"{big}@x.io"),
               user(3, first_name="Ok")]  # fmt: skip
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
        with pytest.raises(ApiUnreachableError, match=r"no complete response within 0\.2s"):
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


# -- hostile servers of our own (tests/hostile_server.py) ------------------------------------


def users(*ids: int) -> list[dict[str, Any]]:
    return [user(i) for i in ids]


def exported_ids(result: Any) -> list[int]:
    return [c["customer_id"] for c in load(result.customers_path)["customers"]]


async def failed_fetch(
    pages: dict[int, Reply], number: int, interval: float = 0.001, **overrides: Any
) -> tuple[PipelineError, ReqresClient]:
    """Fetch one page from a hostile server; the error it ended with, and the client."""
    async with hostile_server(pages, interval=interval) as url:
        client = ReqresClient(fast_settings(base_url=url, **overrides))
        async with client:
            with pytest.raises(PipelineError) as info:
                await client.fetch_page(number)
    return info.value, client


@pytest.mark.parametrize("where", ["page 1", "a later page"])
async def test_counts_in_unicode_digits_are_not_counts_and_resume_works(
    tmp_path: Path, where: str
) -> None:
    # "²".isdigit() is True but int("²") fails: such a count is no count at all.
    healthy = False

    def answer(page: int) -> Reply:
        count = "²" if (page == 1) == (where == "page 1") else 4
        if page == 3 and not healthy:
            return Reply(status=500)
        return listing(users(page) if page <= 4 else [], total_pages=count)

    async with hostile_server(answer) as url:
        settings = fast_settings(base_url=url, output_dir=tmp_path, max_retries=1)
        first = await run_pipeline(settings)
        assert (first.exit_code, first.failed_pages) == (3, [3])
        healthy = True
        second = await run_pipeline(settings, mode="resume")  # replays the "²" page too
    assert second.exit_code == 0 and exported_ids(second) == [1, 2, 3, 4]


@pytest.mark.parametrize("depth", [300, 1000])
async def test_rejected_records_nested_deep_are_written_whole(tmp_path: Path, depth: int) -> None:
    deep = b"[" * depth + b'"bottom"' + b"]" * depth  # no JSON writer would make it
    body = b'{"total_pages": 1, "data": [%s, {"email": "no-id@x.io", "nested": %s}, %s]}' % (
        orjson.dumps(user(1)), deep, deep)  # fmt: skip
    async with hostile_server({1: Reply(body=body)}) as url:
        result = await run_pipeline(fast_settings(base_url=url, output_dir=tmp_path))
    assert result.exit_code == 0 and exported_ids(result) == [1]
    assert result.rejected_path is not None
    written = result.rejected_path.read_bytes().splitlines()
    lines = [orjson.loads(line) for line in written]  # each line is valid JSON
    assert [(line["position"], line["reason"]) for line in lines] == [
        (1, "id missing"), (2, "record is not a JSON object")]  # fmt: skip
    assert lines[0]["record"]["email"] == "no-id@x.io"
    assert deep in written[0] and deep in written[1]  # every level is there (== would recurse)


async def test_an_id_wider_than_64_bits_is_kept_as_sent_with_the_real_reason(
    tmp_path: Path,
) -> None:
    huge = 10**29
    body = (b'{"total_pages": 1, "data": [{"id": 1}, {"id": %d, "email": "a@b.io", "n": %d},'
            b' {"id": 1e29}, {"id": 9.0}]}' % (huge, huge + 1))  # fmt: skip
    async with hostile_server({1: Reply(body=body)}) as url:
        result = await run_pipeline(fast_settings(base_url=url, output_dir=tmp_path))
    assert result.rejected_path is not None
    text = result.rejected_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # orjson would read 1e+29
    assert lines[0]["reason"] == f"id {huge} is larger than 2**63-1"
    assert lines[0]["record"] == {"id": huge, "email": "a@b.io", "n": huge + 1}
    assert str(huge) in text and "1e+29" not in text.splitlines()[0]
    assert [line["reason"] for line in lines[1:]] == ["id is not an integer"] * 2


@pytest.mark.parametrize("part", ["headers", "body"])
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_dribbling_response_is_cut_off_by_the_whole_request_deadline(
    part: Literal["headers", "body"], transport: str
) -> None:
    # One byte every 5 ms never trips a per-read timeout of 0.2 s; 600 bytes take 3 s.
    slow = dribble(listing(users(*range(1, 7)), total_pages=1, pad="x" * 400), part)
    loop = asyncio.get_running_loop()
    started = loop.time()
    error, client = await failed_fetch(
        {1: slow}, 1, interval=0.005, timeout=0.2, max_retries=1, transport=transport
    )
    assert loop.time() - started < 1.5  # two attempts of 0.2 s and a tiny backoff
    assert isinstance(error, ApiUnreachableError)
    assert "no complete response within 0.2s" in str(error)
    assert client.stats.failures["deadline"] == 2


class FailingResolver(aiohttp.abc.AbstractResolver):
    """A resolver that knows no host, so no test does real DNS."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


class DnsFailingTransport(httpx.AsyncBaseTransport):
    """What httpx's own transport raises for a name that does not resolve."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError(str(exc)) from exc


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_host_that_does_not_resolve_is_named_and_not_retried_at_length(
    transport: str,
) -> None:
    settings = fast_settings(base_url="http://nowhere.invalid", max_retries=5)
    inner: httpx.AsyncBaseTransport
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=FailingResolver()))
        inner = AiohttpTransport(client=session)
    else:
        inner = DnsFailingTransport()
    async with (
        httpx.AsyncClient(transport=SeamTransport(inner)) as http,
        ReqresClient(settings, http=http) as client,
    ):
        with pytest.raises(ApiUnreachableError) as info:
            await client.fetch_page(1)
    message = str(info.value)
    assert "cannot resolve host nowhere.invalid" in message and "--base-url" in message
    assert "Timeout" not in message
    assert client.stats.requests == 2  # one retry for a resolver blip, not the whole budget


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (bare_array(users(1, 2)), "a JSON array, not a listing object"),
        (html_page(), "an HTML page"),
        (Reply(body=b'{"total_pages": 1, "data": [{"id": 1'), "JSON cut short at byte 36"),
        (json_page({"users": []}), "a JSON object with no 'data' list"),
        (json_page("users"), "a JSON string, not a listing object"),
        (Reply(body=b""), "an empty body"),
        (Reply(body=b"id,email\n1,a@b.io\n"), "not JSON"),
        (Reply(body=b"\x1f\x8b not gzip at all", headers=GZIP), "a corrupt gzip stream"),
        (Reply(body=gzip.compress(b'{"data": []}')[:-12], headers=GZIP), "a corrupt gzip"),
    ],
)
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_200_that_is_not_a_listing_says_what_it_is(
    reply: Reply, said: str, transport: str
) -> None:
    error, _ = await failed_fetch({2: reply}, 2, max_retries=1, transport=transport)
    assert isinstance(error, PageFetchError)
    assert said in str(error) and "truncated or not JSON" not in str(error)


@pytest.mark.parametrize(
    "reply",
    [
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + b"y" * 1500),
        short_body(b'{"data": [{"email": "' + b"x" * 1500, 4000),
        redirect("http://elsewhere.example/" + "p" * 1500),
        Reply(status=299, body=b"z" * 1500),
    ],
)
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_bodies_and_foreign_text_in_messages_are_cut_short(
    reply: Reply, transport: str
) -> None:
    error, _ = await failed_fetch({2: reply}, 2, max_retries=1, transport=transport)
    message = str(error)
    assert len(message) < 200 + 250, message  # ~200 of theirs, the rest ours (URL, fix)
    assert "y" * 300 not in message and "x" * 300 not in message and "p" * 300 not in message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_gzip_bomb_fails_only_its_page_without_inflating_it(
    tmp_path: Path, transport: str
) -> None:
    limit = 1_000_000
    pages = {1: listing(users(1), total_pages=3), 2: gzip_bomb(64 << 20),
             3: Reply(body=gzip.compress(orjson.dumps({"total_pages": 3, "data": users(3)})),
                      headers=GZIP)}  # fmt: skip
    settings = fast_settings(max_response_bytes=limit, transport=transport, output_dir=tmp_path)
    async with hostile_server(pages) as url:
        settings = settings.model_copy(update={"base_url": url})
        async with ReqresClient(settings) as client:
            tracemalloc.start()
            try:
                with pytest.raises(ResponseTooLargeError, match="max_response_bytes") as info:
                    await client.fetch_page(2)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 4 * limit  # inflated as it streamed, never a whole chunk at once
        assert "gzip" in str(info.value)
        result = await run_pipeline(settings)
    assert result.failed_pages == [2] and exported_ids(result) == [1, 3]


@pytest.mark.parametrize(
    "bad",
    [gzip_bomb(16 << 20), Reply(body=b"x" * 900_000), bare_array(["x" * 1000] * 900)],
    ids=["bomb", "not JSON", "array"],
)
async def test_pages_that_failed_keep_none_of_their_bytes(bad: Reply) -> None:
    limit = 1_000_000
    pages = {1: listing(users(1), total_pages=31)}
    settings = fast_settings(max_response_bytes=limit, concurrency=8, max_retries=1)
    async with hostile_server(lambda page: pages.get(page, bad)) as url:
        tracemalloc.start()
        try:
            async with ReqresClient(settings.model_copy(update={"base_url": url})) as client:
                [page.number async for page in client.iter_pages()]
                held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert sorted(client.failed_pages) == list(range(2, 32))
    assert held < 10 * limit  # 30 failed pages, not 30 x max_response_bytes
