"""Paging that must not lose records: servers that cap the page size, chains that loop."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from customer_pipeline import run_pipeline

from .conftest import BASE_URL, fast_settings
from .test_source import CURSOR, USERS, records, walk

N = 103  # records in the listing


def user(i: int) -> dict[str, Any]:
    return {"id": i, "email": f"u{i}@x.io", "first_name": "A", "last_name": "B",
            "avatar": "https://x.io/a.png"}  # fmt: skip


def capped_api(cap: int, *, offsets: bool, counts: str, first_full: bool = False) -> Any:
    """N users; at most ``cap`` a page whatever was asked (page 1 whole if ``first_full``).

    ``counts``: "total" (a record count only), "pages" (a page count by the cap), "both".
    """

    def answer(request: httpx.Request) -> httpx.Response:
        asked = int(request.url.params["per_page"])
        if offsets:
            start = int(request.url.params["offset"])
            number = start // asked + 1
        else:
            number = int(request.url.params["page"])
            start = (number - 1) * cap  # the server pages by its own size
        size = asked if first_full and number == 1 else cap
        if first_full and number > 1:
            start = asked + (number - 2) * cap
        body: dict[str, Any] = {"data": [user(i + 1) for i in range(start, min(start + size, N))]}
        if counts in ("total", "both"):
            body["total"] = N
        if counts in ("pages", "both"):
            body["total_pages"] = -(-N // cap)
        return httpx.Response(200, json=body)

    return answer


@pytest.mark.parametrize(
    ("offsets", "counts"),
    # Page numbers with a page count from the server were right already: the count is its own.
    [(False, "total"), (True, "total"), (True, "pages"), (True, "both")],
)
async def test_a_server_that_caps_the_page_size_loses_no_record(offsets: bool, counts: str) -> None:
    settings = fast_settings(per_page=25, paginator="offset" if offsets else "page_number")
    with respx.mock:
        respx.get(USERS).mock(side_effect=capped_api(10, offsets=offsets, counts=counts))
        result = await run_pipeline(settings)
    assert result.customers == N and result.complete, result.incomplete_reasons
    assert result.report["api"]["total_pages"] == 11


async def test_a_walk_with_fewer_records_than_the_api_reports_is_incomplete() -> None:
    # Page 1 comes whole, later pages are capped: nothing on the first page shows it, so the
    # count check at the end is what catches it.
    settings = fast_settings(per_page=25)
    with respx.mock:
        respx.get(USERS).mock(side_effect=capped_api(10, offsets=False, counts="total",
                                                      first_full=True))  # fmt: skip
        result = await run_pipeline(settings)
    assert result.exit_code == 3 and not result.complete
    [reason] = result.incomplete_reasons
    assert "the API reports 103 records but its 5 pages held 65" in reason
    assert "--per-page" in reason


async def test_the_reqres_shape_stays_complete_with_its_stated_page_size() -> None:
    # reqres states per_page in the body; a last page shorter than the others is no cap.
    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        data = [user(i + 1) for i in range((page - 1) * 6, min(page * 6, 15))]
        return httpx.Response(200, json={"page": page, "per_page": 6, "total": 15,
                                         "total_pages": 3, "data": data})  # fmt: skip

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        result = await run_pipeline(fast_settings(per_page=6))
    assert (result.customers, result.complete, result.report["api"]["total_pages"]) == (15, True, 3)


@pytest.mark.parametrize("loop", [["c2", "c3", "c2"], ["c2", "c2"]], ids=["A-B-A", "A-A"])
async def test_a_cursor_chain_that_loops_stops_at_the_loop_and_says_so(loop: list[str]) -> None:
    cursors = [None, *loop]  # page n's request carries cursors[n-1]; its answer names cursors[n]

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        n = int(cursor[1:]) if cursor else 1
        following = cursors[n] if n < len(cursors) else cursors[-1]
        return httpx.Response(200, json={"data": records(n), "meta": {"next": following}})

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(max_pages=1000, **CURSOR)
    assert route.call_count == len(set(loop)) + 1  # each cursor once, never to max_pages
    assert numbers == list(range(1, route.call_count + 1))
    [reason] = client.incomplete_reasons()
    assert "already followed (c2)" in reason and "loops" in reason


async def test_a_next_url_chain_that_loops_stops_at_the_loop() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("p", "1"))
        following = f"{USERS}?p={n + 1}" if n < 3 else f"{USERS}?p=2"
        return httpx.Response(200, json={"data": records(n), "next": following})

    with respx.mock:
        route = respx.get(USERS).mock(side_effect=answer)
        numbers, client = await walk(paginator="next_url", next_path="next", max_pages=500)
    assert numbers == [1, 2, 3] and route.call_count == 3
    assert "already followed" in client.incomplete_reasons()[0]
    assert BASE_URL in client.incomplete_reasons()[0]
