"""--cache with SQLite: no request twice within the TTL, conditional requests, the key kept out."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from customer_pipeline import ConfigError, run_pipeline
from customer_pipeline.http import Fetcher, FetchPolicy, Request, Response
from customer_pipeline.http.cache import ResponseCache, SqliteStore, _fresh_seconds
from customer_pipeline.observe import ApiStats, Bus

from .conftest import SECRET_KEY, fast_settings

ORIGIN = "http://api.test"
POLICY = FetchPolicy(concurrency=2, rate_limit=0, max_retries=3, backoff_base=0.001,
                     backoff_max=0.002, timeout=5, max_response_bytes=10_000_000)  # fmt: skip


async def no_sleep(seconds: float) -> None:
    return None


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def cache_at(path: Path, clock: Clock, **options: Any) -> ResponseCache:
    store = SqliteStore.open(path, clock=clock)
    return ResponseCache(store, where=f"sqlite:///{path}", ttl_s=options.pop("ttl_s", 60),
                         clock=clock, secrets=[SECRET_KEY], **options)  # fmt: skip


def fetcher_with(http: httpx.AsyncClient, cache: ResponseCache, bus: Bus) -> Fetcher:
    return Fetcher(http, POLICY, bus, api_key=SECRET_KEY, key_origin=ORIGIN, sleep=no_sleep,
                   cache=cache)  # fmt: skip


def body_of(response: Response) -> bytes:
    if not response.body.startswith(b"{"):
        from customer_pipeline.errors import InvalidBodyError

        raise InvalidBodyError("the response from x is truncated", url="x", status=200)
    return response.body


def run_settings(base: str, tmp_path: Path, cache: Path, **more: Any) -> Any:
    return fast_settings(base_url=base, output_dir=tmp_path / "out", per_page=6,
                         cache=f"sqlite:///{cache}", **more)  # fmt: skip


def customers(result: Any) -> Any:
    return orjson.loads(result.customers_path.read_bytes())["customers"]


async def test_a_cached_rerun_makes_no_request_and_writes_the_same_customers(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=30, per_page=6)
    settings = run_settings(base, tmp_path, tmp_path / "c.db")
    first = await run_pipeline(settings)
    served = sim.stats.requests
    assert served == 5 and first.report["api"]["cache_misses"] == 5
    second = await run_pipeline(settings)
    assert sim.stats.requests == served  # nothing reached the server
    assert customers(second) == customers(first)
    api = second.report["api"]
    assert (api["requests"], api["cache_hits"], api["cache_misses"]) == (0, 5, 0)


async def test_refresh_refetches_every_page_and_replaces_what_was_kept(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=12, per_page=6)
    settings = run_settings(base, tmp_path, tmp_path / "c.db")
    await run_pipeline(settings)
    refreshed = await run_pipeline(settings.model_copy(update={"refresh": True}))
    assert sim.stats.requests == 4 and refreshed.report["api"]["cache_misses"] == 2
    await run_pipeline(settings)
    assert sim.stats.requests == 4  # the refreshed answers are served again


async def test_an_etag_turns_a_stale_entry_into_a_conditional_request_and_a_304(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=12, per_page=6, etag=True, cache_control="no-cache")
    settings = run_settings(base, tmp_path, tmp_path / "c.db")
    first = await run_pipeline(settings)
    second = await run_pipeline(settings)
    assert sim.stats.not_modified == 2 and sim.stats.ok == 2
    assert customers(second) == customers(first)
    api = second.report["api"]
    assert (api["cache_revalidated"], api["cache_hits"], api["successes"]) == (2, 0, 2)


async def test_no_store_is_never_kept(simulator: Any, tmp_path: Path) -> None:
    base, sim = await simulator(total=12, per_page=6, cache_control="no-store")
    settings = run_settings(base, tmp_path, tmp_path / "c.db")
    await run_pipeline(settings)
    await run_pipeline(settings)
    assert sim.stats.requests == 4


async def test_an_entry_past_its_ttl_is_asked_for_again(tmp_path: Path) -> None:
    clock = Clock()
    cache = cache_at(tmp_path / "c.db", clock, ttl_s=60)
    stats_bus = Bus()
    stats = ApiStats().attach(stats_bus)
    with respx.mock:
        route = respx.get(f"{ORIGIN}/p").mock(return_value=httpx.Response(200, content=b"{}"))
        async with httpx.AsyncClient() as http:
            fetcher = fetcher_with(http, cache, stats_bus)
            await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), body_of)
            clock.now += 59
            await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), body_of)
            assert route.call_count == 1
            clock.now += 2
            await fetcher.fetch(Request(f"{ORIGIN}/p", "page 1"), body_of)
    assert route.call_count == 2
    assert (stats.cache_hits, stats.cache_misses) == (1, 2)


async def test_a_truncated_200_is_never_kept_so_its_retry_asks_the_server(
    tmp_path: Path,
) -> None:
    cache = cache_at(tmp_path / "c.db", Clock())
    kept: list[bytes] = []
    put = cache.store.put

    async def spy(key: str, value: bytes, ttl_s: float) -> None:
        kept.append(value)
        await put(key, value, ttl_s)

    cache.store.put = spy  # type: ignore[method-assign]
    with respx.mock:
        answers = [httpx.Response(200, content=b'"trunc'),
                   httpx.Response(200, content=b'{"ok": 1}')]
        route = respx.get(f"{ORIGIN}/p").mock(side_effect=answers)
        async with httpx.AsyncClient() as http:
            body = await fetcher_with(http, cache, Bus()).fetch(
                Request(f"{ORIGIN}/p", "page 1"), body_of
            )
    assert body == b'{"ok": 1}' and route.call_count == 2
    assert len(kept) == 1 and kept[0].endswith(b'\n{"ok": 1}')


async def test_only_a_200_is_kept(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "c.db", Clock())
    with respx.mock:
        respx.get(f"{ORIGIN}/p").mock(side_effect=[httpx.Response(503), httpx.Response(200,
                                                   content=b"{}")])  # fmt: skip
        async with httpx.AsyncClient() as http:
            await fetcher_with(http, cache, Bus()).fetch(Request(f"{ORIGIN}/p", "p"), body_of)
    assert (await cache.lookup(f"{ORIGIN}/p")) is not None
    assert (await cache.lookup(f"{ORIGIN}/other")) is None


async def test_the_cache_file_is_0600_and_holds_no_trace_of_the_key(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=30, per_page=6, api_key=SECRET_KEY)
    path = tmp_path / "c.db"
    old_umask = os.umask(0o022)
    try:
        await run_pipeline(run_settings(base, tmp_path, path))
    finally:
        os.umask(old_umask)
    for name in ("c.db", "c.db-wal", "c.db-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("c.db*"))
    assert b"George" in raw or b"george" in raw  # the answers are there...
    assert SECRET_KEY.encode() not in raw and b"x-api-key" not in raw.lower()  # ...the key not


async def test_an_answer_echoing_the_key_is_not_kept(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "c.db", Clock())
    await cache.keep(f"{ORIGIN}/p", httpx.Headers({"x-echo": SECRET_KEY}), b"{}")
    await cache.keep(f"{ORIGIN}/q", httpx.Headers(), b'{"k": "' + SECRET_KEY.encode() + b'"}')
    assert await cache.lookup(f"{ORIGIN}/p") is None and await cache.lookup(f"{ORIGIN}/q") is None


async def test_keys_share_one_cache_unless_a_namespace_separates_them(tmp_path: Path) -> None:
    clock = Clock()
    plain = cache_at(tmp_path / "c.db", clock)
    await plain.keep(f"{ORIGIN}/p", httpx.Headers(), b"{}")
    other_key = ResponseCache(plain.store, where="x", ttl_s=60, secrets=["another"], clock=clock)
    assert await other_key.lookup(f"{ORIGIN}/p") is not None
    tenant = ResponseCache(plain.store, where="x", ttl_s=60, namespace="b", clock=clock)
    assert await tenant.lookup(f"{ORIGIN}/p") is None
    assert plain.key(f"{ORIGIN}/p") != tenant.key(f"{ORIGIN}/p")


async def test_a_resumed_run_reads_the_pages_it_lacks_from_the_cache(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=30, per_page=6)
    settings = run_settings(base, tmp_path, tmp_path / "c.db")
    await run_pipeline(settings, keep_checkpoint=True)
    served = sim.stats.requests
    resumed = await run_pipeline(settings.model_copy(update={"output_dir": tmp_path / "o2"}),
                                 mode="resume")  # fmt: skip
    assert resumed.complete and sim.stats.requests == served


def test_an_unusable_cache_file_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot use the cache file .*drop --cache"):
        (tmp_path / "a-file").touch()  # where the folder should be: it cannot be made
        SqliteStore.open(tmp_path / "a-file" / "c.db")
    (tmp_path / "junk.db").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a database"):
        SqliteStore.open(tmp_path / "junk.db")


@pytest.mark.parametrize(
    ("header", "fresh"),
    [(None, 60), ("max-age=10", 10), ("public, max-age=600", 60), ("no-cache", 0),
     ("no-store", None), ("max-age=x", 0), ('max-age="5"', 5)],
)  # fmt: skip
def test_cache_control_shortens_freshness_or_forbids_keeping(
    header: str | None, fresh: float | None
) -> None:
    assert _fresh_seconds(header, 60) == fresh


async def test_the_simulator_sends_etag_and_cache_control_and_answers_304(simulator: Any) -> None:
    base, sim = await simulator(total=12, per_page=6, etag=True, cache_control="max-age=60")
    async with httpx.AsyncClient() as http:
        first = await http.get(f"{base}/api/users?page=1&per_page=6")
        etag = first.headers["etag"]
        again = await http.get(f"{base}/api/users?page=1&per_page=6",
                               headers={"If-None-Match": etag})  # fmt: skip
        other = await http.get(f"{base}/api/users?page=2&per_page=6",
                               headers={"If-None-Match": etag})  # fmt: skip
    assert first.status_code == 200 and first.headers["cache-control"] == "max-age=60"
    assert again.status_code == 304 and again.content == b""
    assert other.status_code == 200 and other.headers["etag"] != etag
    assert sim.stats.not_modified == 1


async def test_the_wal_and_shm_files_of_an_open_cache_are_0600_too(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = SqliteStore.open(tmp_path / "c.db")
        await store.put("k", b"v", 10)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("c.db*")}
        await store.close()
    finally:
        os.umask(old_umask)
    assert modes == {"c.db": 0o600, "c.db-wal": 0o600, "c.db-shm": 0o600}


async def test_an_existing_cache_file_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    await SqliteStore.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
