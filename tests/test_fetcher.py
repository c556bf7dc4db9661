"""The fetcher: policy over bytes, whatever the URL and the body."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import respx

from customer_pipeline import AuthError, InvalidBodyError
from customer_pipeline.http import Fetcher, FetchPolicy, GaveUp, Request, Response
from customer_pipeline.observe import ApiStats, Bus

from .conftest import SECRET_KEY

ORIGIN = "http://api.test"
POLICY = FetchPolicy(concurrency=2, rate_limit=0, max_retries=3, backoff_base=0.001,
                     backoff_max=0.002, timeout=5, max_response_bytes=10_000_000)  # fmt: skip


async def no_sleep(seconds: float) -> None:
    return None


def fetcher(http: httpx.AsyncClient, bus: Bus | None = None, **policy: Any) -> Fetcher:
    chosen = FetchPolicy(**{**POLICY.__dict__, **policy}) if policy else POLICY
    return Fetcher(http, chosen, bus or Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                   sleep=no_sleep)  # fmt: skip


def body_of(response: Response) -> bytes:
    return response.body


@respx.mock
async def test_any_url_comes_back_as_status_headers_and_body_through_accept() -> None:
    respx.get(f"{ORIGIN}/anything/at/all?x=1").mock(
        return_value=httpx.Response(200, content=b"raw bytes", headers={"X-Extra": "yes"})
    )
    seen: list[Response] = []

    def accept(response: Response) -> int:
        seen.append(response)
        return len(response.body)

    async with httpx.AsyncClient() as http:
        result = await fetcher(http).fetch(Request(f"{ORIGIN}/anything/at/all?x=1", "a thing"),
                                           accept)  # fmt: skip
    assert result == 9
    assert seen[0].body == b"raw bytes" and seen[0].headers["x-extra"] == "yes"


@respx.mock
async def test_accept_raising_invalid_body_has_the_attempt_made_again() -> None:
    route = respx.get(f"{ORIGIN}/x").mock(
        side_effect=[httpx.Response(200, content=b"half"), httpx.Response(200, content=b"whole")]
    )

    def accept(response: Response) -> bytes:
        if response.body != b"whole":
            raise InvalidBodyError("cut short", url=response.request.url, status=200)
        return response.body

    bus = Bus()
    stats = ApiStats().attach(bus)
    async with httpx.AsyncClient() as http:
        assert await fetcher(http, bus).fetch(Request(f"{ORIGIN}/x", "x"), accept) == b"whole"
    assert route.call_count == 2
    assert (stats.requests, stats.successes, stats.retries) == (2, 1, 1)
    assert stats.failures == Counter({"invalid_body": 1})


@respx.mock
async def test_retries_run_out_with_gave_up_and_no_retry_for_401() -> None:
    respx.get(f"{ORIGIN}/down").mock(return_value=httpx.Response(503))
    respx.get(f"{ORIGIN}/locked").mock(return_value=httpx.Response(401))
    async with httpx.AsyncClient() as http:
        f = fetcher(http)
        with pytest.raises(GaveUp) as gave_up:
            await f.fetch(Request(f"{ORIGIN}/down", "the down page"), body_of)
        with pytest.raises(AuthError):
            await f.fetch(Request(f"{ORIGIN}/locked", "the locked page"), body_of)
    assert gave_up.value.attempts == 4 and gave_up.value.cause == "HTTP 503"
    assert respx.calls.call_count == 5  # 4 attempts, then one 401 not retried


@respx.mock
async def test_the_key_goes_only_to_its_own_origin() -> None:
    respx.get(url__regex=r"^https?://").mock(return_value=httpx.Response(200, content=b"ok"))
    urls = [f"{ORIGIN}/a?b=1", f"{ORIGIN.upper()}/a", "http://api.test.evil.example/a",
            "http://api.test:8080/a", "https://api.test/a", "http://other.test/a"]  # fmt: skip
    async with httpx.AsyncClient() as http:
        f = fetcher(http)
        for url in urls:
            await f.fetch(Request(url, "a page"), body_of)
    keyed = [call.request.headers.get("x-api-key") == SECRET_KEY for call in respx.calls]
    assert keyed == [True, True, False, False, False, False]
