"""ReqresClient against the simulator served by ``customer-pipeline simulate`` in a subprocess."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from customer_pipeline import ReqresClient

from .conftest import fast_settings
from .helpers import simulator_process


@pytest.fixture
def simulator_url() -> Iterator[str]:
    with simulator_process("--total", "1200", "--per-page", "6", "--failure-rate", "0.2",
                           "--truncate-rate", "0.01", "--drop-rate", "0.01", "--rate-limit",
                           "0", "--latency-ms", "2") as url:  # fmt: skip
        yield url


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_every_page_exactly_once_with_at_most_8_in_flight(
    simulator_url: str, transport: str
) -> None:
    settings = fast_settings(
        base_url=simulator_url, concurrency=8, max_retries=10, transport=transport
    )
    seen: Counter[int] = Counter()
    async with ReqresClient(settings) as client:
        async for page in client.iter_pages():
            seen[page.number] += 1
            assert len(page.records) == 6
    assert sorted(seen) == list(range(1, 201))
    assert set(seen.values()) == {1}
    assert client.failed_pages == {}
    assert client.stats.retries > 0  # the faults really happened
    async with httpx.AsyncClient() as http:
        served = (await http.get(f"{simulator_url}/_simulator/stats")).json()
    assert 0 < served["max_in_flight"] <= 8
    assert served["errors_5xx"] > 0
