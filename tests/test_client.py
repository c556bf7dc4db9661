"""ReqresClient: retries, limits, Retry-After, fail-fast errors, pagination."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import httpx
import orjson
import pytest
import respx

from customer_pipeline import (
    ApiUnreachableError,
    AuthError,
    PageFetchError,
    PageNotFoundError,
    ReqresClient,
)
from customer_pipeline.client import ApiStats
from customer_pipeline.http import make_http_client, parse_retry_after
from customer_pipeline.http.pacing import BURST_SECONDS
from customer_pipeline.sources import PageSummary

from .conftest import BASE_URL, SECRET_KEY, fast_settings

USERS = f"{BASE_URL}/api/users"


def listing(page: int, total_pages: int | None = 3, per_page: int = 2, **extra: Any) -> bytes:
    """A reqres envelope with ``per_page`` users for ``page``."""
    first = (page - 1) * per_page + 1
    doc: dict[str, Any] = {
        "page": page,
        "per_page": per_page,
        "data": [{"id": i, "email": f"u{i}@x.io"} for i in range(first, first + per_page)],
    }
    if total_pages is not None:
        doc["total_pages"] = total_pages
    doc.update(extra)
    return orjson.dumps(doc)


def page_of(request: httpx.Request) -> int:
    return int(request.url.params["page"])


async def collect(client: ReqresClient) -> list[int]:
    return [page.number async for page in client.iter_pages()]


@respx.mock
async def test_retries_500_503_truncated_and_dropped_then_succeeds() -> None:
    route = respx.get(USERS).mock(
        side_effect=[
            httpx.Response(500, json={"error": "boom"}),
            httpx.Response(503, text="<html>busy</html>"),
            httpx.Response(200, content=b'{"data": [{"id": 1'),
            httpx.RemoteProtocolError("Server disconnected"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, content=listing(1, total_pages=1)),
        ]
    )
    async with ReqresClient(fast_settings(max_retries=5)) as client:
        page = await client.fetch_page(1)
    assert [r["id"] for r in page.records] == [1, 2]
    assert route.call_count == 6
    assert client.stats.retries == 5
    assert client.stats.failures == Counter(
        {"500": 1, "503": 1, "invalid_body": 1, "RemoteProtocolError": 1, "ReadTimeout": 1}
    )


@respx.mock
async def test_gives_up_after_max_retries_with_page_fetch_error() -> None:
    route = respx.get(USERS).mock(return_value=httpx.Response(502))
    async with ReqresClient(fast_settings(max_retries=3)) as client:
        with pytest.raises(PageFetchError) as info:
            await client.fetch_page(2)
    assert route.call_count == 4
    assert info.value.page == 2
    assert "after 4 attempts" in str(info.value) and "HTTP 502" in str(info.value)


@respx.mock
async def test_page_one_failing_is_api_unreachable_naming_the_url() -> None:
    respx.get(USERS).mock(side_effect=httpx.ConnectError("refused"))
    async with ReqresClient(fast_settings(max_retries=1)) as client:
        with pytest.raises(ApiUnreachableError) as info:
            await collect(client)
    assert USERS in str(info.value)


@respx.mock
async def test_failed_page_does_not_stop_the_others() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = page_of(request)
        if page == 3:
            return httpx.Response(500)
        return httpx.Response(200, content=listing(page, total_pages=5))

    respx.get(USERS).mock(side_effect=answer)
    async with ReqresClient(fast_settings(max_retries=2)) as client:
        pages = await collect(client)
    assert sorted(pages) == [1, 2, 4, 5]
    assert list(client.failed_pages) == [3]


@respx.mock
async def test_401_fails_fast_naming_the_fix_without_the_key() -> None:
    route = respx.get(USERS).mock(return_value=httpx.Response(401, json={"error": "Missing"}))
    async with ReqresClient(fast_settings()) as client:
        with pytest.raises(AuthError) as info:
            await collect(client)
    assert route.call_count == 1
    assert "CUSTOMER_PIPELINE_API_KEY" in str(info.value)
    assert SECRET_KEY not in str(info.value) and SECRET_KEY not in repr(info.value)


@respx.mock
async def test_401_on_a_later_page_ends_the_iteration() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if page_of(request) == 1:
            return httpx.Response(200, content=listing(1, total_pages=4))
        return httpx.Response(403)

    route = respx.get(USERS).mock(side_effect=answer)
    async with ReqresClient(fast_settings()) as client:
        with pytest.raises(AuthError) as info:
            await collect(client)
    assert "HTTP 403 from" in str(info.value) and "CUSTOMER_PIPELINE_API_KEY" in str(info.value)
    requested = [page_of(call.request) for call in route.calls]
    assert requested[0] == 1 and len(requested) == len(set(requested))  # a 403 is never retried


@respx.mock
async def test_404_on_the_listing_fails_fast() -> None:
    route = respx.get(USERS).mock(return_value=httpx.Response(404, json={}))
    async with ReqresClient(fast_settings()) as client:
        with pytest.raises(PageNotFoundError, match="--base-url"):
            await collect(client)
    assert route.call_count == 1


@respx.mock
async def test_sends_the_key_as_header_and_per_page_as_query() -> None:
    route = respx.get(USERS).mock(
        return_value=httpx.Response(200, content=listing(1, total_pages=1))
    )
    async with ReqresClient(fast_settings(per_page=25)) as client:
        await client.fetch_page(1)
    request = route.calls.last.request
    assert request.headers["x-api-key"] == SECRET_KEY
    assert request.url.params["per_page"] == "25"
    assert request.url.params["page"] == "1"


@respx.mock
async def test_key_never_reaches_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    respx.get(USERS).mock(
        side_effect=[httpx.Response(500), httpx.ReadError("reset"), httpx.Response(401)]
    )
    settings = fast_settings()
    async with ReqresClient(settings) as client:
        with pytest.raises(AuthError) as info:
            await client.fetch_page(1)
        text = " ".join([caplog.text, repr(client), repr(settings), str(settings), str(info.value)])
    assert "retry" in caplog.text  # the retries were logged...
    assert SECRET_KEY not in text  # ...without the key


async def test_in_flight_requests_never_exceed_concurrency() -> None:
    in_flight = 0
    peak = 0
    attempts: Counter[int] = Counter()

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            page = page_of(request)
            attempts[page] += 1
            if page % 7 == 0 and attempts[page] == 1:
                return httpx.Response(503)  # retries must respect the limit too
            return httpx.Response(200, content=listing(page, total_pages=60))
        finally:
            in_flight -= 1

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        async with ReqresClient(fast_settings(concurrency=5, max_retries=50)) as client:
            pages = await collect(client)
    assert sorted(pages) == list(range(1, 61))
    assert peak == 5  # reached, never exceeded
    assert client.stats.max_in_flight == 5


async def test_rate_limit_holds_across_pages_and_retries() -> None:
    stamps: list[float] = []
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        stamps.append(time.monotonic())
        if calls % 4 == 0:
            return httpx.Response(500)
        return httpx.Response(200, content=listing(page_of(request), total_pages=24))

    rate = 200.0
    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        async with ReqresClient(fast_settings(concurrency=8, rate_limit=rate)) as client:
            await collect(client)
    assert len(stamps) >= 30
    # Within any window, at most rate * window plus the small burst allowance started (and
    # a little slack: a stall between the limiter and the mock can bunch the timestamps).
    burst = max(1, rate * BURST_SECONDS)
    for i, start in enumerate(stamps):
        window = [t for t in stamps[i:] if t - start < 0.1]
        assert len(window) <= rate * 0.1 + burst + 3
    assert stamps[-1] - stamps[0] >= (len(stamps) - burst) / rate * 0.9


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleepers: list[tuple[str, float]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        self.sleepers.append((task.get_name() if task else "?", seconds))
        self.now += seconds
        await asyncio.sleep(0)


async def test_429_retry_after_pauses_every_worker() -> None:
    fake = FakeTime()
    requests: list[tuple[int, float]] = []
    answered: list[int] = []  # how many requests had started when the 429 went out
    told = False

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal told
        page = page_of(request)
        requests.append((page, fake.now))
        await asyncio.sleep(0)
        if page == 2 and not told:
            told = True
            answered.append(len(requests))
            return httpx.Response(429, headers={"Retry-After": "120"})
        return httpx.Response(200, content=listing(page, total_pages=12))

    settings = fast_settings(concurrency=4, backoff_max=300)
    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        async with ReqresClient(settings, sleep=fake.sleep, clock=fake.clock) as client:
            pages = await collect(client)
    assert sorted(pages) == list(range(1, 13))
    assert client.stats.rate_limited == 1
    assert client.stats.retry_after_wait_s == pytest.approx(120)
    # Every request made after the 429 came at least Retry-After later, whichever worker.
    t429 = next(t for p, t in requests if p == 2)
    later = requests[answered[0] :]
    assert len(later) >= 8
    assert all(t >= t429 + 120 for _, t in later)


async def test_retry_after_is_capped_at_backoff_max() -> None:
    fake = FakeTime()
    with respx.mock:
        respx.get(USERS).mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "3600"}),
                httpx.Response(200, content=listing(1, total_pages=1)),
            ]
        )
        settings = fast_settings(backoff_max=2)
        async with ReqresClient(settings, sleep=fake.sleep, clock=fake.clock) as client:
            await client.fetch_page(1)
    assert sum(s for _, s in fake.sleepers) == pytest.approx(2)


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("envelope", "expected_pages"),
    [
        ({"total_pages": 0}, [1]),
        ({"total": 7}, [1, 2, 3, 4]),  # total_pages missing: derived from total / per_page
        ({}, [1, 2, 3, 4, 5]),  # nothing said: walk until the first empty page
        ({"total_pages": "3"}, [1, 2, 3]),
        ({"total_pages": -4}, [1, 2, 3, 4, 5]),  # nonsense is ignored, like missing
    ],
)
@respx.mock
async def test_pagination_edge_cases(envelope: dict[str, Any], expected_pages: list[int]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = page_of(request)
        data = [{"id": page}] if page <= 4 else []
        return httpx.Response(200, json={"page": page, "per_page": 2, "data": data, **envelope})

    respx.get(USERS).mock(side_effect=answer)
    async with ReqresClient(fast_settings(per_page=2, concurrency=1)) as client:
        pages = await collect(client)
    assert pages == expected_pages


@respx.mock
async def test_a_later_page_reporting_more_pages_fetches_the_extra_ones() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = page_of(request)
        total = 3 if page == 1 else 6
        return httpx.Response(200, content=listing(page, total_pages=total))

    respx.get(USERS).mock(side_effect=answer)
    async with ReqresClient(fast_settings(concurrency=2)) as client:
        pages = await collect(client)
    assert sorted(pages) == [1, 2, 3, 4, 5, 6]
    assert client.total_pages == 6


@respx.mock
async def test_empty_data_yields_an_empty_page() -> None:
    respx.get(USERS).mock(
        return_value=httpx.Response(200, json={"page": 1, "total_pages": 1, "data": []})
    )
    async with ReqresClient(fast_settings()) as client:
        pages = [p async for p in client.iter_pages()]
    assert [(p.number, p.records) for p in pages] == [(1, [])]


async def test_aiohttp_transport_is_the_default_and_is_intercepted_by_respx() -> None:
    settings = fast_settings(transport="aiohttp", concurrency=3)
    http = make_http_client(settings)
    assert type(http._transport.inner).__name__ == "AiohttpTransport"  # under our seam
    with respx.mock(using="httpx") as mock:
        mock.get(USERS).mock(
            side_effect=[httpx.Response(503), httpx.Response(200, content=listing(1, 1))]
        )
        async with http, ReqresClient(settings, http=http) as client:
            page = await client.fetch_page(1)
    assert len(page.records) == 2 and client.stats.retries == 1


async def test_breaking_out_early_cancels_the_workers() -> None:
    with respx.mock:
        respx.get(USERS).mock(
            side_effect=lambda r: httpx.Response(200, content=listing(page_of(r), 500))
        )
        client = ReqresClient(fast_settings(concurrency=4))
        async with client, aclosing(client.iter_pages()) as pages:
            async for page in pages:
                if page.number == 1:
                    break
    pending = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("_worker")
    ]
    assert pending == []
    assert client.stats.requests < 500


def test_retry_after_wait_is_never_a_negative_zero() -> None:
    stats = ApiStats(retry_after_wait_s=-1e-9, limiter_wait_s=-0.0)
    figures = stats.as_dict()
    for name in ("retry_after_wait_s", "rate_limit_wait_s"):
        assert figures[name] == 0 and math.copysign(1, figures[name]) == 1, name


async def test_a_zero_retry_after_on_a_moving_clock_adds_no_negative_wait() -> None:
    ticks = iter(range(10**6))

    def clock() -> float:  # every reading a microsecond later, as a real clock would be
        return 1000 + next(ticks) * 1e-6

    async def no_sleep(seconds: float) -> None:
        return None

    with respx.mock:
        respx.get(USERS).mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "0"}),
                httpx.Response(200, content=listing(1, total_pages=1)),
            ]
        )
        async with ReqresClient(fast_settings(), sleep=no_sleep, clock=clock) as client:
            await client.fetch_page(1)
    assert client.stats.retry_after_wait_s == 0
    assert math.copysign(1, client.stats.as_dict()["retry_after_wait_s"]) == 1


def counted_api(
    last_page: int, envelope: Callable[[int], dict[str, Any]], seen: list[int]
) -> Callable[[httpx.Request], httpx.Response]:
    """One user on each of pages 1..last_page, empty pages after; ``envelope`` adds counts."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = page_of(request)
        seen.append(page)
        data = [{"id": page}] if page <= last_page else []
        return httpx.Response(200, json={"data": data, **envelope(page)})

    return answer


@pytest.mark.parametrize("concurrency", [1, 7])
async def test_more_pages_than_max_pages_fetches_max_pages_and_says_why_it_is_incomplete(
    concurrency: int,
) -> None:
    seen: list[int] = []
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(12, lambda p: {"total_pages": 12}, seen))
        settings = fast_settings(max_pages=10, concurrency=concurrency)
        async with ReqresClient(settings) as client:
            pages = await collect(client)
    assert sorted(pages) == list(range(1, 11)) and max(seen) == 10
    assert client.incomplete_reasons() == ["the API reports 12 pages; max_pages is 10"]


async def test_a_bogus_huge_count_costs_no_extra_requests_but_is_not_called_complete() -> None:
    seen: list[int] = []
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(3, lambda p: {"total_pages": 10**9}, seen))
        async with ReqresClient(fast_settings(concurrency=4)) as client:
            pages = await collect(client)
    assert sorted(pages) == [1, 2, 3, 4] and len(seen) <= 4 + 4 * 4
    [reason] = client.incomplete_reasons()
    assert "reports 1000000000 pages" in reason and "page 4 was empty" in reason


async def test_no_count_and_no_empty_page_before_max_pages_is_incomplete() -> None:
    seen: list[int] = []
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(50, lambda p: {}, seen))
        async with ReqresClient(fast_settings(max_pages=8)) as client:
            pages = await collect(client)
    assert sorted(pages) == list(range(1, 9)) and max(seen) == 8
    [reason] = client.incomplete_reasons()
    assert "page 8" in reason and "max_pages" in reason


async def test_a_complete_walk_has_no_incomplete_reasons() -> None:
    seen: list[int] = []
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(5, lambda p: {"total_pages": 5}, seen))
        async with ReqresClient(fast_settings(max_pages=5)) as client:
            await collect(client)
    assert client.incomplete_reasons() == []


@pytest.mark.parametrize("concurrency", [1, 2, 10, 50])
async def test_without_a_count_the_walk_ends_at_the_first_empty_page_at_any_concurrency(
    concurrency: int,
) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        page = page_of(request)
        for _ in range(10 if page == 3 else 1):  # the empty page comes in last
            await asyncio.sleep(0)
        data = [] if page == 3 or page > 5 else [{"id": page}]  # a gap at page 3
        return httpx.Response(200, json={"data": data})

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        async with ReqresClient(fast_settings(concurrency=concurrency)) as client:
            pages = await collect(client)
    assert sorted(pages) == [1, 2, 3]  # 4 and 5 lie past the end, whoever fetched them
    assert client.incomplete_reasons() == []


async def test_the_walk_runs_at_most_a_few_times_concurrency_past_a_stalled_page() -> None:
    seen: list[int] = []
    released = False
    ahead_while_stalled = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal released, ahead_while_stalled
        page = page_of(request)
        seen.append(page)
        if page == 2:
            for _ in range(300):  # long enough for the others to run as far as they may
                await asyncio.sleep(0)
            ahead_while_stalled = max(seen)
            released = True
        return httpx.Response(200, json={"data": [{"id": page}] if page <= 200 else []})

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        async with ReqresClient(fast_settings(concurrency=4)) as client:
            pages = await collect(client)
    assert released and sorted(pages) == list(range(1, 202))
    assert 2 < ahead_while_stalled <= 2 + 4 * 4


async def test_a_resumed_walk_without_counts_passes_its_recorded_pages_and_ends_as_before() -> None:
    seen: list[int] = []
    recorded = {n: PageSummary(empty=False, total_pages=None) for n in range(2, 41)}
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(45, lambda p: {}, seen))
        async with asyncio.timeout(10), ReqresClient(fast_settings(concurrency=1)) as client:
            pages = [p.number async for p in client.iter_pages(skip=recorded)]
    assert pages == [1, 41, 42, 43, 44, 45, 46]  # 40 recorded pages: more than the window
    assert sorted(seen) == [1, *range(41, 47)]


async def test_a_resumed_walk_ends_at_a_recorded_empty_page() -> None:
    seen: list[int] = []
    recorded = {2: PageSummary(empty=False, total_pages=None),
                3: PageSummary(empty=True, total_pages=None)}  # fmt: skip
    with respx.mock:
        respx.get(USERS).mock(side_effect=counted_api(9, lambda p: {}, seen))
        async with ReqresClient(fast_settings(concurrency=3)) as client:
            pages = [p.number async for p in client.iter_pages(skip=recorded)]
    assert pages == [1] and client.incomplete_reasons() == []
