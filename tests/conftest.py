"""Shared fixtures: fast settings, a served simulator, a key that must never leak."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from customer_pipeline import Settings
from customer_pipeline.simulator import Simulator, SimulatorConfig, serve

# json-server fixtures (json_server_017, json_server_10, json_server, json_server_db),
# PostgreSQL's (postgres_cluster, postgres), redis_server (tests/redis.py), Prometheus's
# (prometheus, pushgateway), dask_cluster (tests/dask_cluster.py).
pytest_plugins = [
    "tests.jsonserver", "tests.postgres", "tests.redis", "tests.prometheus", "tests.dask_cluster"
]

SECRET_KEY = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"
BASE_URL = "http://api.test"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No developer environment or .env file reaches the command line's settings in a test."""
    import os

    for name in list(os.environ):
        if name.startswith("CUSTOMER_PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def fast_settings(**overrides: Any) -> Settings:
    """Settings that never wait long: tiny backoff, no client rate limit."""
    values: dict[str, Any] = {
        "base_url": BASE_URL,
        "api_key": SECRET_KEY,
        "concurrency": 4,
        "rate_limit": 0,
        "backoff_base": 0.001,
        "backoff_max": 0.005,
        "max_retries": 5,
        "timeout": 5,
        "transport": "httpx",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def simulator() -> AsyncIterator[Callable[..., Any]]:
    """Start simulators on free loopback ports; all are stopped when the test ends."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def start(**config: Any) -> tuple[str, Simulator]:
            defaults: dict[str, Any] = {"failure_rate": 0.0, "rate_limit": 0.0, "latency_ms": 0.0}
            defaults.update(config)
            return await stack.enter_async_context(serve(SimulatorConfig(**defaults)))

        yield start
