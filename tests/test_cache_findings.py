"""--cache: what the tester of issue 12 found (key spellings, TTL on rerun, the file, 304s)."""

from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest
import respx

from customer_pipeline import ConfigError
from customer_pipeline.errors import ApiError
from customer_pipeline.http import Fetcher, Request
from customer_pipeline.http.cache import ResponseCache, SqliteStore
from customer_pipeline.observe import Bus

from .conftest import SECRET_KEY
from .test_cache import ORIGIN, POLICY, Clock, body_of, cache_at, no_sleep

SLASHED_KEY = "abc/def+ghi=jkl-123"


@pytest.mark.parametrize(
    "echo",
    ['{"k": "abc\\/def+ghi=jkl-123"}', '{"k": "abc%2Fdef%2Bghi%3Djkl-123"}',
     '{"k": "abc%2fdef%2bghi%3djkl-123"}'],
)  # fmt: skip
async def test_an_answer_echoing_any_spelling_of_the_key_is_not_kept(
    tmp_path: Path, echo: str
) -> None:
    clock = Clock()
    cache = ResponseCache(SqliteStore.open(tmp_path / "c.db", clock=clock), where="x",
                          ttl_s=60, secrets=[SLASHED_KEY], clock=clock)  # fmt: skip
    await cache.keep(f"{ORIGIN}/p", httpx.Headers(), echo.encode())
    assert await cache.lookup(f"{ORIGIN}/p") is None


async def test_a_shorter_ttl_on_a_rerun_bounds_an_answer_kept_with_a_longer_one(
    tmp_path: Path,
) -> None:
    clock = Clock()
    long_ttl = cache_at(tmp_path / "c.db", clock, ttl_s=3600)
    await long_ttl.keep(f"{ORIGIN}/p", httpx.Headers(), b"{}")
    clock.now += 120
    short_ttl = ResponseCache(long_ttl.store, where="x", ttl_s=60, clock=clock)
    assert await short_ttl.lookup(f"{ORIGIN}/p") is None
    assert await long_ttl.lookup(f"{ORIGIN}/p") is not None


def test_the_cache_folder_is_created_0700(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "responses.db"
    SqliteStore.open(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE responses (id INTEGER, body TEXT, expires REAL)")
        db.execute("INSERT INTO responses VALUES (1, 'keep me', 0)")
    db.close()
    path.chmod(0o644)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"app\.db is not a customer-pipeline cache"):
        SqliteStore.open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == before


async def test_our_own_cache_file_is_opened_again(tmp_path: Path) -> None:
    clock = Clock()
    first = cache_at(tmp_path / "c.db", clock)
    await first.keep(f"{ORIGIN}/p", httpx.Headers(), b"{}")
    await first.close()
    again = cache_at(tmp_path / "c.db", clock)
    assert await again.lookup(f"{ORIGIN}/p") is not None


async def test_an_unasked_304_is_said_to_be_unexpected_not_a_redirect() -> None:
    with respx.mock:
        respx.get(f"{ORIGIN}/p").mock(return_value=httpx.Response(304))
        async with httpx.AsyncClient() as http:
            fetcher = Fetcher(http, POLICY, Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                              sleep=no_sleep)  # fmt: skip
            with pytest.raises(ApiError, match="unexpected HTTP 304") as caught:
                await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), body_of)
    assert "redirect" not in str(caught.value)


async def test_a_304_with_no_store_drops_the_kept_answer(tmp_path: Path) -> None:
    clock = Clock()
    cache = cache_at(tmp_path / "c.db", clock)
    await cache.keep(f"{ORIGIN}/p", httpx.Headers({"etag": '"v1"', "cache-control": "no-cache"}),
                     b"{}")  # fmt: skip
    with respx.mock:
        respx.get(f"{ORIGIN}/p").mock(
            return_value=httpx.Response(304, headers={"cache-control": "no-store"}))
        async with httpx.AsyncClient() as http:
            fetcher = Fetcher(http, POLICY, Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                              sleep=no_sleep, cache=cache)  # fmt: skip
            await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), body_of)
    assert await cache.lookup(f"{ORIGIN}/p") is None


async def test_a_short_key_is_not_taken_for_an_echo_and_an_echo_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = SqliteStore.open(tmp_path / "c.db", clock=clock)
    short = ResponseCache(store, where="x", ttl_s=60, secrets=["1"], clock=clock)
    await short.keep(f"{ORIGIN}/p", httpx.Headers(), b'{"page": 1, "total": 12}')
    assert await short.lookup(f"{ORIGIN}/p") is not None
    echoed = ResponseCache(store, where="x", ttl_s=60, secrets=[SECRET_KEY], clock=clock)
    with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
        for page in range(3):
            await echoed.keep(f"{ORIGIN}/q{page}", httpx.Headers(), SECRET_KEY.encode())
    warned = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert len(warned) == 1


def test_a_short_secret_is_still_masked_in_logs() -> None:
    # A short database password ("pw12") is a secret all the same: logs mask it, even though
    # an absurd one-character key then masks digits too. The cache's echo check alone skips
    # secrets under 8 characters (above), since refusing every page would cache nothing.
    from customer_pipeline.logs import redact

    assert redact("connecting with pw12", ["pw12"]) == "connecting with ***"
    assert redact(f"key {SECRET_KEY[:8]}", [SECRET_KEY[:8]]) == "key ***"
