"""stream_customers: the run's chain with a yielding sink, and closing it early."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import respx

from customer_pipeline import (
    Customer,
    IncompleteError,
    PageFetchError,
    pipeline,
    run_pipeline,
    stream_customers,
)
from customer_pipeline.dedup import SortedSpool
from customer_pipeline.simulator import Dataset

from .conftest import BASE_URL, fast_settings
from .helpers import pages_api
from .reference import expected_customers


async def test_stream_yields_the_customers_run_pipeline_exports_each_once(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=300, per_page=6, dirty_rate=0.3, duplicate_rate=0.3, seed=3)
    settings = fast_settings(base_url=base, per_page=6, seed=11, output_dir=tmp_path / "out")
    streamed = [c async for c in stream_customers(settings)]
    assert streamed == expected_customers(Dataset(300, 3, 0.3, 0.3), 6, seed=11)  # by id
    assert list(tmp_path.iterdir()) == []  # no file written, no folder made
    result = await run_pipeline(settings)
    assert streamed == orjson.loads(result.customers_path.read_bytes())["customers"]
    for customer in streamed:
        Customer.model_validate(customer)


async def test_stream_raises_after_the_last_customer_when_max_pages_cut_it_short() -> None:
    got: list[dict[str, Any]] = []
    with pages_api(set(), total_pages=8), pytest.raises(IncompleteError) as error:
        async for customer in stream_customers(fast_settings(max_pages=6)):
            got.append(customer)
    assert len(got) == 6 * 6  # everything fetched came through first
    assert error.value.reasons == ["the API reports 8 pages; max_pages is 6"]
    assert "incomplete: the API reports 8 pages; max_pages is 6" in str(error.value)


async def test_stream_raises_page_fetch_error_naming_every_reason() -> None:
    got: list[dict[str, Any]] = []
    with pages_api({4}), pytest.raises(PageFetchError, match=r"pages \[4\] failed") as error:
        async for customer in stream_customers(fast_settings(max_retries=1)):
            got.append(customer)
    assert len(got) == 7 * 6 and error.value.page == 4


async def test_stream_logs_each_rejected_record_with_its_id_and_real_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = (b'{"total_pages": 1, "data": [{"id": 1, "email": "a@x.io"}, '
            b'{"id": 100000000000000000000000000000}, {"email": "no-id@x.io"}]}')  # fmt: skip
    caplog.set_level(logging.WARNING, logger="customer_pipeline")
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(return_value=httpx.Response(200, content=body))
        got = [c["customer_id"] async for c in stream_customers(fast_settings())]
    assert got == [1]
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert lines == [
        f"page 1 record 1 (id {10**29}) rejected: id {10**29} is larger than 2**63-1",
        "page 1 record 2 rejected: id missing",
    ]


# -- closing early --------------------------------------------------------------------------


@dataclass
class PagesServer:
    """A raw HTTP/1.1 keep-alive server of reqres pages; pages in ``hang`` never answer."""

    pages: int
    hang: set[int] = field(default_factory=set)
    requested: list[int] = field(default_factory=list)
    connections: int = 0
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.all_closed.clear()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1].decode()
                page = int(httpx.URL(target).params["page"])
                self.requested.append(page)
                if page in self.hang:
                    self.hanging.set()
                    await reader.read()  # until the client closes the connection
                    return
                users = [{"id": i, "email": f"u{i}@x.io"} for i in range(page * 6 - 5, page * 6 + 1)
                         ]  # fmt: skip
                body = orjson.dumps({"total_pages": self.pages, "data": users})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.connections -= 1
            if self.connections == 0:
                self.all_closed.set()


@contextlib.asynccontextmanager
async def pages_server(
    pages: int, hang: frozenset[int] = frozenset()
) -> AsyncIterator[tuple[str, PagesServer]]:
    """Serve PagesServer on a free loopback port; stopped when the block ends."""
    state = PagesServer(pages, set(hang))
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.close()
        await server.wait_closed()


def open_descriptors() -> int:
    """File descriptors this process holds (sockets, scratch files)."""
    return len(os.listdir("/proc/self/fd"))


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_breaking_out_inside_aclosing_leaks_no_task_connection_or_file(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run of the spool per few customers: scratch files stay open while it is iterated.
    monkeypatch.setattr(pipeline, "SortedSpool", functools.partial(SortedSpool, run_bytes=512))
    async with pages_server(pages=12) as (base, server):
        before_tasks, before_fds = other_tasks(), open_descriptors()
        settings = fast_settings(base_url=base, transport=transport, concurrency=4)
        async with contextlib.aclosing(stream_customers(settings)) as customers:
            async for customer in customers:
                assert customer["customer_id"] == 1  # the lowest id, once every page is in
                break
        with anyio.fail_after(5):  # the server sees every connection closed
            await server.all_closed.wait()
        assert other_tasks() <= before_tasks
        assert open_descriptors() == before_fds
        assert sorted(server.requested) == list(range(1, 13))


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_cancelling_the_stream_while_it_fetches_stops_the_fetching(
    transport: str,
) -> None:
    async with pages_server(pages=200, hang=frozenset({5})) as (base, server):
        before_tasks, before_fds = other_tasks(), open_descriptors()
        settings = fast_settings(base_url=base, transport=transport, concurrency=4)
        got: list[dict[str, Any]] = []
        with anyio.CancelScope() as scope:

            async def cancel_once_page_5_hangs() -> None:
                await server.hanging.wait()
                scope.cancel()

            watcher = asyncio.create_task(cancel_once_page_5_hangs())
            async with contextlib.aclosing(stream_customers(settings)) as customers:
                async for customer in customers:
                    got.append(customer)
        await watcher
        assert scope.cancelled_caught and got == []
        asked = len(server.requested)
        with anyio.fail_after(5):
            await server.all_closed.wait()
        assert len(server.requested) == asked < 200  # nothing more was asked for
        assert other_tasks() <= before_tasks
        assert open_descriptors() == before_fds
