"""The source's walks: fan-outs and chains, their stop rules, failures and what they send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from customer_pipeline import ApiUnreachableError, AuthError, ReqresClient, run_pipeline

from .conftest import BASE_URL, SECRET_KEY, fast_settings

USERS = f"{BASE_URL}/api/users"
CURSOR = {"paginator": "cursor", "next_path": "meta.next"}


def records(n: int, size: int = 2) -> list[dict[str, Any]]:
    return [{"id": n * 100 + i} for i in range(size)]


async def walk(**settings: Any) -> tuple[list[int], ReqresClient]:
    async with ReqresClient(fast_settings(**settings)) as client:
        numbers = [page.number async for page in client.iter_pages()]
    return numbers, client


Answer = Callable[[httpx.Request], httpx.Response]


def cursor_api(
    last: int, end: Callable[[int], dict[str, Any]] | None = None, seen: list[str] | None = None
) -> Answer:
    """Pages 1..last behind cursors "c2".."c<last>"; ``end(n)`` gives page n's meta at the end."""

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        if seen is not None:
            seen.append(cursor or "")
        n = int(cursor[1:]) if cursor else 1
        meta = {"next": f"c{n + 1}"} if n < last else (end(n) if end else {"next": None})
        return httpx.Response(200, json={"data": records(n), "meta": meta})

    return answer


@pytest.mark.parametrize(
    "end",
    [lambda n: {"next": None}, lambda n: {}, lambda n: {"next": ""}],
    ids=["null", "missing", "empty"],
)
async def test_a_cursor_chain_is_walked_one_unit_after_the_other_to_its_end(
    end: Callable[[int], dict[str, Any]],
) -> None:
    seen: list[str] = []
    with respx.mock:
        respx.get(USERS).mock(side_effect=cursor_api(5, end, seen))
        numbers, client = await walk(concurrency=8, **CURSOR)
    assert numbers == [1, 2, 3, 4, 5] and seen == ["", "c2", "c3", "c4", "c5"]
    assert client.stats.max_in_flight == 1  # a chain cannot fan out
    assert client.total_pages == 5 and client.incomplete_reasons() == []


async def test_a_chain_ends_at_an_empty_page_even_if_it_names_a_next_one() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        n = int(cursor[1:]) if cursor else 1
        return httpx.Response(200, json={"data": records(n) if n < 3 else [],
                                         "meta": {"next": f"c{n + 1}"}})  # fmt: skip

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(**CURSOR)
    assert numbers == [1, 2, 3] and route.call_count == 3
    assert client.total_pages == 2 and client.incomplete_reasons() == []


async def test_a_chain_ends_at_a_page_that_repeats_the_one_before() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        n = min(int(cursor[1:]) if cursor else 1, 4)  # clamps past page 4, next forever
        return httpx.Response(200, json={"data": records(n), "meta": {"next": f"c{n + 1}"}})

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(**CURSOR)
    assert numbers == [1, 2, 3, 4] and route.call_count == 5
    assert client.total_pages == 4 and client.incomplete_reasons() == []


async def test_a_chain_never_passes_max_pages_and_says_so() -> None:
    with respx.mock:
        route = respx.get(USERS).mock(side_effect=cursor_api(50))
        numbers, client = await walk(max_pages=6, **CURSOR)
    assert numbers == [1, 2, 3, 4, 5, 6] and route.call_count == 6
    [reason] = client.incomplete_reasons()
    assert "page 6 (max_pages) has a next page" in reason and "--max-pages" in reason


async def test_a_unit_that_fails_for_good_ends_the_chain_as_incomplete() -> None:
    api = cursor_api(9)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") == "c4":
            return httpx.Response(503)
        return api(request)

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(max_retries=2, **CURSOR)
    assert numbers == [1, 2, 3] and route.call_count == 3 + 3  # c4 tried 3 times, then stop
    assert list(client.failed_pages) == [4]
    reasons = client.incomplete_reasons()
    assert reasons[0] == "pages [4] failed after every retry"
    assert "the walk stopped at page 4" in reasons[1] and "--resume" in reasons[1]
    assert client.total_pages is None


async def test_the_first_unit_failing_is_unreachable_and_a_401_ends_a_chain() -> None:
    with respx.mock:
        respx.get(USERS).mock(return_value=httpx.Response(502))
        with pytest.raises(ApiUnreachableError, match="page 1 failed after 2 attempts"):
            await walk(max_retries=1, **CURSOR)
    api = cursor_api(9)
    with respx.mock:
        respx.get(USERS).mock(
            side_effect=lambda r: httpx.Response(401) if r.url.params.get("cursor") else api(r)
        )
        with pytest.raises(AuthError):
            await walk(**CURSOR)


async def test_a_next_url_on_another_origin_is_never_requested_and_the_walk_is_incomplete() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(USERS).mock(
            return_value=httpx.Response(200, json={
                "data": records(1), "links": {"next": "http://evil.test/steal?page=2"}})
        )  # fmt: skip
        evil = mock.get("http://evil.test/steal").mock(return_value=httpx.Response(200))
        numbers, client = await walk(paginator="next_url", next_path="links.next")
    assert numbers == [1] and not evil.called
    [reason] = client.incomplete_reasons()
    assert "not on http://api.test" in reason and "the walk stops there" in reason
    assert all(SECRET_KEY not in r for r in client.incomplete_reasons())


async def test_next_urls_are_followed_with_the_key_on_the_same_origin() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("p", "1"))
        following = f"/api/users?p={n + 1}" if n < 3 else None
        return httpx.Response(200, json={"data": records(n), "links": {"next": following}})

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, _ = await walk(paginator="next_url", next_path="links.next")
    assert numbers == [1, 2, 3]
    assert [str(c.request.url) for c in route.calls] == [
        f"{USERS}?per_page=6", f"{USERS}?p=2", f"{USERS}?p=3"]  # fmt: skip
    assert all(c.request.headers["x-api-key"] == SECRET_KEY for c in route.calls)


@pytest.mark.parametrize("concurrency", [1, 6])
async def test_a_page_walk_without_counts_ends_where_a_server_clamps(concurrency: int) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        page = min(int(request.url.params["page"]), 5)  # page 6, 7... answer page 5 again
        await asyncio.sleep(0)
        return httpx.Response(200, json={"data": records(page)})

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(concurrency=concurrency)
    assert sorted(numbers) == [1, 2, 3, 4, 5]
    assert client.total_pages == 5 and client.incomplete_reasons() == []


async def test_pages_counted_from_zero() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"data": records(page), "total_pages": 3})

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(first_page=0, concurrency=2)
    assert sorted(numbers) == [0, 1, 2] and route.call_count == 3
    assert client.total_pages == 3


async def test_offsets_fan_out_once_the_first_page_gives_the_total() -> None:
    in_flight = peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        offset = int(request.url.params["offset"])
        size = int(request.url.params["limit"])
        data = [{"id": i + 1} for i in range(offset, min(offset + size, 23))]
        return httpx.Response(200, json={"data": data, "total": 23})

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(paginator="offset", size_param="limit", per_page=5,
                                     concurrency=4)  # fmt: skip
    assert sorted(numbers) == [1, 2, 3, 4, 5] and client.total_pages == 5
    assert peak > 1


async def test_a_link_chain_without_last_resolves_relative_links() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        headers = {"Link": f'<?page={page + 1}>; rel="next"'} if page < 4 else {}
        return httpx.Response(200, json=records(page), headers=headers)

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(paginator="link", data_path="", concurrency=4)
    assert numbers == [1, 2, 3, 4] and route.call_count == 4
    assert client.stats.max_in_flight == 1 and client.total_pages == 4


async def test_a_rejected_nested_record_is_written_as_sent_wide_ids_whole(tmp_path: Path) -> None:
    huge = 10**29
    body = (b'[{"uid": "7", "contact": {"email": "a@b.io"}}, {"uid": "user-8", "x": {"y": 1}},'
            b' {"uid": %d, "contact": {"email": "c@d.io"}}]' % huge)  # fmt: skip
    with respx.mock:
        respx.get(USERS).mock(return_value=httpx.Response(200, content=body))
        result = await run_pipeline(fast_settings(
            output_dir=tmp_path, data_path="", max_pages=1,
            field={"id": "uid", "email": "contact.email"}))  # fmt: skip
    assert result.customers == 1 and result.rejected == 2
    assert result.rejected_path is not None
    lines = [json.loads(line) for line in result.rejected_path.read_text().splitlines()]
    assert lines == [
        {"page": 1, "position": 1, "reason": "id is not an integer",
         "record": {"uid": "user-8", "x": {"y": 1}}},
        {"page": 1, "position": 2, "reason": f"id {huge} is larger than 2**63-1",
         "record": {"uid": huge, "contact": {"email": "c@d.io"}}},
    ]  # fmt: skip
