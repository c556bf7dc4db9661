"""--cache redis://: against a real redis-server, dumped to prove the key is not in it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from customer_pipeline import run_pipeline
from customer_pipeline.observe import Progress

from .conftest import SECRET_KEY, fast_settings
from .redis import RedisServer, free_port


def settings_for(base: str, out: Path, cache: str, **more: Any) -> Any:
    return fast_settings(base_url=base, output_dir=out, per_page=6, cache=cache, **more)


def customers(result: Any) -> Any:
    return orjson.loads(result.customers_path.read_bytes())["customers"]


async def test_a_cached_rerun_through_redis_makes_no_request_and_redis_holds_no_key(
    simulator: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    base, sim = await simulator(total=30, per_page=6, api_key=SECRET_KEY)
    settings = settings_for(base, tmp_path / "a", redis_server.url)
    first = await run_pipeline(settings)
    served = sim.stats.requests
    second = await run_pipeline(settings.model_copy(update={"output_dir": tmp_path / "b"}))
    assert sim.stats.requests == served == 5
    assert customers(second) == customers(first)
    assert second.report["api"]["cache_hits"] == 5
    assert redis_server.cli("DBSIZE") == "5"
    dump = redis_server.dump()
    assert b"customer-pipeline:cache:v1:" in dump  # the dump does hold the entries...
    assert SECRET_KEY.encode() not in dump  # ...but not the key, in any spelling we send
    assert b"x-api-key" not in dump.lower() and SECRET_KEY[:12].encode() not in dump
    ttl = int(redis_server.cli("TTL", redis_server.cli("--scan").splitlines()[0]))
    assert 3500 < ttl <= 3600  # Redis drops an entry by itself after --cache-ttl


async def test_another_key_shares_the_cache_and_a_namespace_keeps_apart(
    simulator: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    base, sim = await simulator(total=12, per_page=6)
    settings = settings_for(base, tmp_path / "a", redis_server.url)
    await run_pipeline(settings)
    other = settings.model_copy(update={"output_dir": tmp_path / "b"})
    other = type(settings)(**{**other.model_dump(), "api_key": "another-key"})
    await run_pipeline(other)
    assert sim.stats.requests == 2
    apart = other.model_copy(update={"output_dir": tmp_path / "c", "cache_namespace": "t2"})
    await run_pipeline(apart)
    assert sim.stats.requests == 4


async def test_redis_killed_mid_run_warns_and_loses_no_record(
    simulator: Any, redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = await simulator(total=60, per_page=6, latency_ms=5)
    plain = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path / "plain",
                                             per_page=6, concurrency=2))  # fmt: skip

    def kill_after_the_first_page(progress: Progress) -> None:
        if progress.pages_done == 1:
            redis_server.kill()

    settings = settings_for(base, tmp_path / "cached", redis_server.url, concurrency=2)
    with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
        result = await run_pipeline(settings, on_progress=kill_after_the_first_page)
    assert redis_server.proc.poll() is not None  # it did die mid-run
    assert result.complete and result.exit_code == 0
    assert customers(result) == customers(plain)
    warnings = [r.getMessage() for r in caplog.records if "going on without the cache" in
                r.getMessage()]  # fmt: skip
    assert len(warnings) == 1 and "redis://127.0.0.1" in warnings[0]


async def test_an_unreachable_redis_from_the_start_only_warns(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, sim = await simulator(total=12, per_page=6)
    password = "Secr3t-Redis-Pass"
    url = f"redis://:{password}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="customer_pipeline"):
        result = await run_pipeline(settings_for(base, tmp_path, url))
    assert result.complete and sim.stats.requests == 2
    text = (tmp_path / "pipeline.log").read_text()
    assert "going on without the cache" in text and password not in text


def test_the_command_with_no_redis_warns_once_per_part_and_exits_0(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from customer_pipeline.cli import main

    dead = f"redis://:Pa55-word-x@127.0.0.1:{free_port()}/0"
    args = ["run", "--simulate", "--output-dir", str(tmp_path), "--no-progress",
            "--cache", dead, "--limiter-url", dead]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("going on without the cache") == 1
    assert result.output.count("limiting this process alone") == 1
    assert "Pa55-word-x" not in result.output and "Traceback" not in result.output
