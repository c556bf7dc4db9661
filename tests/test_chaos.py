"""Chaos: end-to-end runs against a simulator at its worst, each with the exact customers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from customer_pipeline import run_pipeline
from customer_pipeline.simulator import Dataset

from .conftest import fast_settings
from .reference import expected_customers

SCENARIOS = {
    "30% 500/503": {"failure_rate": 0.3},
    "5% truncated bodies": {"truncate_rate": 0.05},
    "5% dropped connections": {"drop_rate": 0.05},
    "bursts of 429": {"rate_limit": 60.0},
    "10% duplicates and dirt": {"duplicate_rate": 0.1, "dirty_rate": 0.1},
    "everything at once": {"failure_rate": 0.3, "truncate_rate": 0.05, "drop_rate": 0.05,
                           "rate_limit": 60.0, "duplicate_rate": 0.1, "dirty_rate": 0.1},
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_chaos_exports_exactly_the_expected_customers(
    simulator: Any, tmp_path: Path, name: str
) -> None:
    faults = SCENARIOS[name]
    total, per_page, seed = 1500, 10, 7
    base, sim = await simulator(total=total, per_page=per_page, seed=seed, **faults)
    # Retry-After (1 s from the simulator) is capped at backoff_max: let it through where
    # 429s are part of the scenario, so every worker really waits.
    backoff_max = 1.0 if "rate_limit" in faults else 0.02
    settings = fast_settings(
        base_url=base, output_dir=tmp_path, per_page=per_page, concurrency=16,
        max_retries=25, backoff_base=0.002, backoff_max=backoff_max, seed=seed,
    )  # fmt: skip
    result = await run_pipeline(settings)
    dataset = Dataset(total, seed, faults.get("dirty_rate", 0), faults.get("duplicate_rate", 0))
    exported = orjson.loads(result.customers_path.read_bytes())["customers"]
    assert result.complete
    assert exported == expected_customers(dataset, per_page, seed)
    api = result.report["api"]
    assert api["retries"] == api["requests"] - api["successes"]  # each failure retried, none lost
    if "rate_limit" in faults:
        assert api["rate_limited_429"] > 0 and sim.stats.rate_limited == api["rate_limited_429"]
    elif faults.keys() & {"failure_rate", "truncate_rate", "drop_rate"}:
        assert api["retries"] > 0
    else:
        assert api["retries"] == 0  # dirt is the records' problem: nothing to retry


async def test_fifty_thousand_customers_through_every_fault(simulator: Any, tmp_path: Path) -> None:
    faults = SCENARIOS["everything at once"] | {"rate_limit": 0.0}
    total, per_page = 50_000, 100
    base, _ = await simulator(total=total, per_page=per_page, **faults)
    settings = fast_settings(
        base_url=base, output_dir=tmp_path, per_page=per_page, concurrency=16,
        max_retries=25, backoff_base=0.002, backoff_max=0.02,
    )  # fmt: skip
    result = await run_pipeline(settings)
    dataset = Dataset(total, 42, 0.1, 0.1)
    assert result.complete
    exported = orjson.loads(result.customers_path.read_bytes())["customers"]
    expected = expected_customers(dataset, per_page, 42)
    assert len(exported) == len(expected) > 45_000
    assert exported == expected
