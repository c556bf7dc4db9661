"""--limiter-url: one rate limit shared through a real Redis by several limiters and processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import orjson
import pytest
import respx

from customer_pipeline.http import Fetcher, FetchPolicy, Request
from customer_pipeline.http._redis import redis_client
from customer_pipeline.http.shared_limit import SharedRateLimiter
from customer_pipeline.observe import Bus
from customer_pipeline.settings import DatabaseUrl

from .conftest import SECRET_KEY
from .helpers import simulator_process
from .redis import RedisServer, free_port

ORIGIN = "http://api.test"


class Sleeps:
    """An injected sleep: records each wait, waits for none, and moves its clock on."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def limiter(url: str, rate: float, sleeps: Sleeps, origin: str = ORIGIN) -> SharedRateLimiter:
    return SharedRateLimiter(redis_client(DatabaseUrl(url)), origin, rate, where=url,
                             sleep=sleeps)  # fmt: skip


async def test_processes_take_turns_slot_by_slot_none_starves(redis_server: RedisServer) -> None:
    a_sleeps, b_sleeps = Sleeps(), Sleeps()
    a = limiter(redis_server.url, 10, a_sleeps)
    b = limiter(redis_server.url, 10, b_sleeps)
    try:
        for _ in range(5):  # asked in turn, as two processes would, no time passing
            await a.acquire()
            await b.acquire()
    finally:
        await a.close()
        await b.close()
    # Each slot is 0.1 s after the one before, whoever asked: A gets 0, 0.2, 0.4...
    assert [round(w, 1) for w in a_sleeps.waits] == [0.2, 0.4, 0.6, 0.8]
    assert [round(w, 1) for w in b_sleeps.waits] == [0.1, 0.3, 0.5, 0.7, 0.9]


async def test_another_origin_has_a_limit_of_its_own(redis_server: RedisServer) -> None:
    sleeps = Sleeps()
    a = limiter(redis_server.url, 10, sleeps)
    other = limiter(redis_server.url, 10, sleeps, origin="http://other.test:8080")
    try:
        await a.acquire()
        await other.acquire()
    finally:
        await a.close()
        await other.close()
    assert sleeps.waits == []


async def test_a_pause_in_one_process_delays_every_other(redis_server: RedisServer) -> None:
    sleeps = Sleeps()
    a = limiter(redis_server.url, 100, Sleeps())
    b = limiter(redis_server.url, 100, sleeps)
    try:
        await a.pause(2.0)
        await b.acquire()
    finally:
        await a.close()
        await b.close()
    assert len(sleeps.waits) == 1 and 1.9 < sleeps.waits[0] <= 2.0


async def test_a_429_seen_by_one_fetcher_pauses_a_fetcher_in_another_process(
    redis_server: RedisServer,
) -> None:
    policy = FetchPolicy(concurrency=2, rate_limit=100, max_retries=2, backoff_base=0.001,
                         backoff_max=5, timeout=5, max_response_bytes=10_000)  # fmt: skip
    other_sleeps = Sleeps()
    mine = limiter(redis_server.url, 100, Sleeps())
    other = limiter(redis_server.url, 100, other_sleeps)
    try:
        with respx.mock:
            answers = [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200)]
            respx.get(f"{ORIGIN}/p").mock(side_effect=answers)
            async with httpx.AsyncClient() as http:
                fake = Sleeps()
                fetcher = Fetcher(http, policy, Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                                  sleep=fake, clock=fake.clock, limiter=mine)  # fmt: skip
                await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), lambda r: r.body)
        await other.acquire()
    finally:
        await mine.close()
        await other.close()
    assert len(other_sleeps.waits) == 1 and 2.9 < other_sleeps.waits[0] <= 3.0


async def test_redis_gone_mid_run_falls_back_to_the_local_limit_with_one_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps = Sleeps()
    shared = limiter(redis_server.url, 1000, sleeps)
    try:
        await shared.acquire()
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
            for _ in range(3):
                await shared.acquire()
                await shared.pause(1.0)
    finally:
        await shared.close()
    assert shared.local is not None
    warned = [r.getMessage() for r in caplog.records if "limiting this process alone" in
              r.getMessage()]  # fmt: skip
    assert len(warned) == 1 and "--rate-limit 1000/s" in warned[0]


async def test_an_unreachable_redis_is_said_before_the_first_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = limiter(f"redis://:hunter2-pass@127.0.0.1:{free_port()}/0", 5, Sleeps())
    with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
        await shared.check()
    await shared.close()
    assert shared.local is not None and "limiting this process alone" in caplog.text


def test_three_processes_share_one_budget_without_429s(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Three runs at --rate-limit 20 through one Redis, against a server allowing 24/s."""
    with simulator_process("--failure-rate", "0", "--latency-ms", "0", "--rate-limit", "24",
                           "--total", "120", "--per-page", "6") as url:  # fmt: skip
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "customer_pipeline", "run", "--base-url", url,
                 "--per-page", "6", "--rate-limit", "20", "--limiter-url", redis_server.url,
                 "--output-dir", str(tmp_path / f"out{n}"), "--no-progress",
                 "--backoff-base", "0.05", "--backoff-max", "2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for n in range(3)
        ]  # fmt: skip
        errors = [proc.communicate(timeout=60)[1] for proc in runs]
        with urllib.request.urlopen(f"{url}/_simulator/stats", timeout=5) as answer:
            served = json.loads(answer.read())
    assert [proc.returncode for proc in runs] == [0, 0, 0], errors
    for n in range(3):
        doc = orjson.loads((tmp_path / f"out{n}" / "processed_customers.json").read_bytes())
        assert [c["customer_id"] for c in doc["customers"]] == list(range(1, 121))
    assert served["rate_limited"] <= 0.01 * served["requests"], served
    assert served["ok"] == 60


async def test_a_limiter_url_without_a_rate_limit_is_said_to_share_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from customer_pipeline.http import fetch_extras

    from .conftest import fast_settings

    settings = fast_settings(rate_limit=0, limiter_url="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
        async with fetch_extras(settings) as (limiter, cache):
            assert limiter is None and cache is None
    assert "--limiter-url shares nothing while --rate-limit is 0" in caplog.text
