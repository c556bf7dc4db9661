"""What the independent tester of the sources found, each fixed: records lost with exit 0, the
key in the checkpoint, a crash on a long next URL, a Link header that ended a walk silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from customer_pipeline import run_pipeline

from .conftest import SECRET_KEY, fast_settings
from .test_paging_safety import user
from .test_source import CURSOR, USERS

IGNORED = "the API seems to ignore the paging parameter"


@pytest.mark.parametrize(
    ("served", "asked"),
    [
        ({"pagination": "page_number"}, {"page_param": "p"}),  # a wrong --page-param
        ({"pagination": "page_number"}, {"paginator": "offset", "size_param": "per_page"}),
        (
            {"pagination": "cursor"},
            {"paginator": "cursor", "next_path": "meta.next_cursor", "cursor_param": "after"},
        ),
        ({"pagination": "page_number"}, {"first_page": 0}),  # page 0: not a page here
    ],
    ids=["page-param", "offset-on-pages", "cursor-param", "first-page-0"],
)
async def test_a_server_that_ignores_the_paging_parameter_is_not_a_complete_run(
    simulator: Any, tmp_path: Path, served: dict[str, Any], asked: dict[str, Any]
) -> None:
    base, _ = await simulator(total=60, per_page=6, **served)
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=6,
                                              api_key="", **asked))  # fmt: skip
    assert result.exit_code == 3 and not result.complete
    if "first_page" not in asked:  # the simulator serves page 0 empty: the count check says it
        assert any(IGNORED in reason for reason in result.incomplete_reasons)


async def test_the_right_parameters_on_the_same_servers_stay_complete(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=60, per_page=6, pagination="cursor")
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=6,
                                              api_key="", paginator="cursor",
                                              next_path="meta.next_cursor"))  # fmt: skip
    assert (result.exit_code, result.customers) == (0, 60)


async def test_an_offset_server_that_caps_its_page_size_without_counts_is_incomplete() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["offset"])
        return httpx.Response(200, json={"data": [user(i + 1) for i in
                                                  range(start, min(start + 5, 47))]})  # fmt: skip

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        result = await run_pipeline(fast_settings(paginator="offset", per_page=6))
    assert result.exit_code == 3 and result.customers == 40
    [reason] = result.incomplete_reasons
    assert "caps its page size, so offsets skipped records" in reason


async def test_a_cursor_walk_that_ends_early_is_checked_against_the_reported_total() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        n = int(cursor[1:]) if cursor else 1
        data = [user(i + 1) for i in range((n - 1) * 6, n * 6)] if n == 1 else []
        return httpx.Response(200, json={"data": data, "meta": {"next": f"c{n + 1}",
                                                                "total": 47}})  # fmt: skip

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        result = await run_pipeline(fast_settings(total_path="meta.total", **CURSOR))
    assert result.exit_code == 3 and result.customers == 6
    assert "the API reports 47 records but its 2 pages held 6" in result.incomplete_reasons[0]


def echoing_api(state: dict[str, Any]) -> Any:
    """A next-URL chain of 3 pages whose next URLs echo the key; page 3 fails until told."""

    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("p", "1"))
        if n == 3 and state["fail"]:
            return httpx.Response(503)
        following = f"{USERS}?p={n + 1}&api_key={SECRET_KEY}" if n < 3 else None
        return httpx.Response(200, json={"data": [user(n * 10 + i) for i in range(3)],
                                         "next": following, "echo": SECRET_KEY})  # fmt: skip

    return answer


async def test_a_key_echoed_into_next_urls_and_bodies_never_reaches_the_checkpoint(
    tmp_path: Path,
) -> None:
    state = {"fail": True}
    settings = fast_settings(output_dir=tmp_path, paginator="next_url", next_path="next",
                             max_retries=0)  # fmt: skip
    with respx.mock:
        respx.get(USERS).mock(side_effect=echoing_api(state))
        first = await run_pipeline(settings)
        assert first.exit_code == 3
        stored = (tmp_path / ".checkpoint.sqlite3").read_bytes()
        assert b"?p=3" in stored and SECRET_KEY.encode() not in stored
        state["fail"] = False
        resumed = await run_pipeline(settings, mode="resume")
    assert resumed.exit_code == 0 and resumed.customers == 9
    ids = [c["customer_id"] for c in orjson.loads(resumed.customers_path.read_bytes())["customers"]]
    assert ids == [10, 11, 12, 20, 21, 22, 30, 31, 32]


async def test_a_next_url_too_long_to_request_fails_its_page_not_the_run(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [user(1), user(2)],
                                         "next": f"{USERS}?p=" + "9" * 200_000})  # fmt: skip

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        result = await run_pipeline(fast_settings(output_dir=tmp_path, paginator="next_url",
                                                  next_path="next"))  # fmt: skip
    assert result.exit_code == 3 and result.customers == 2
    assert any("cannot be requested" in reason or "page 2" in reason
               for reason in result.incomplete_reasons)  # fmt: skip


async def test_a_link_header_that_is_not_rfc_8288_fails_its_page(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        link = (f'<{USERS}?page=2&per_page=2>; rel="next"' if page == 1
                else f'{USERS}?page=3&per_page=2; rel="next"')  # fmt: skip
        return httpx.Response(200, json=[user(page * 10), user(page * 10 + 1)],
                              headers={"Link": link})

    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        result = await run_pipeline(fast_settings(output_dir=tmp_path, paginator="link",
                                                  data_path="", per_page=2,
                                                  max_retries=1))  # fmt: skip
    assert result.exit_code == 3 and result.customers == 2
    assert "pages [2] failed" in result.incomplete_reasons[0]
    assert "not RFC 8288" in (tmp_path / "pipeline.log").read_text()
