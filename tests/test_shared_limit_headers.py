"""Rate-limit headers: RateLimit-* and X-RateLimit-* slow the workers down before any 429."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from customer_pipeline import run_pipeline
from customer_pipeline.http.pacing import rate_limit_wait

from .conftest import fast_settings

NOW = 1_750_000_000.0


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("given", "wait"),
    [
        ({"RateLimit_Remaining": "0", "RateLimit_Reset": "6"}, 6.0),
        ({"RateLimit_Remaining": "2", "RateLimit_Reset": "6"}, 2.0),
        ({"X_RateLimit_Remaining": "1", "X_RateLimit_Reset": "3"}, 1.5),
        # A Unix time (GitHub's X-RateLimit-Reset): 8 s from now, 3 left -> one every 2 s.
        ({"X_RateLimit_Remaining": "3", "X_RateLimit_Reset": str(int(NOW) + 8)}, 2.0),
        ({"X_RateLimit_Remaining": "0", "X_RateLimit_Reset": str(int(NOW) - 5)}, 0.0),
        # The IETF draft's reset is always delta seconds, however large.
        ({"RateLimit_Remaining": "0", "RateLimit_Reset": str(int(NOW) + 8)}, NOW + 8),
        # Enough left for every worker: nothing to slow down.
        ({"RateLimit_Remaining": "4", "RateLimit_Reset": "60"}, None),
        ({"RateLimit_Remaining": "x", "RateLimit_Reset": "6"}, None),
        ({"RateLimit_Remaining": "-1", "RateLimit_Reset": "6"}, None),
        ({"RateLimit_Remaining": "0", "RateLimit_Reset": "nan"}, None),
        ({"RateLimit_Remaining": "0"}, None),
        ({}, None),
    ],
)
def test_the_wait_between_requests_the_headers_ask_for(
    given: dict[str, str], wait: float | None
) -> None:
    assert rate_limit_wait(headers(**given), 4, NOW) == wait


def test_the_ietf_headers_win_over_the_x_ones() -> None:
    both = headers(RateLimit_Remaining="0", RateLimit_Reset="2", X_RateLimit_Remaining="0",
                   X_RateLimit_Reset="9")  # fmt: skip
    assert rate_limit_wait(both, 4, NOW) == 2.0


@pytest.mark.parametrize("style", ["ietf", "x", "x-epoch"])
async def test_a_run_slows_down_before_the_quota_runs_out(
    simulator: Any, tmp_path: Path, style: str
) -> None:
    # 8 listing requests per 0.25 s window; 12 pages asked 4 at a time, as fast as they come.
    base, sim = await simulator(total=72, per_page=6, quota=8, quota_window_s=0.25,
                                rate_headers=style)  # fmt: skip
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=6,
                                              concurrency=4, backoff_max=1))  # fmt: skip
    doc = orjson.loads(result.customers_path.read_bytes())
    assert result.complete and len(doc["customers"]) == 72
    assert sim.stats.rate_limited == 0, sim.stats
