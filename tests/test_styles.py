"""Every paging style, end to end: each record exactly once, under faults, and json-server too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from customer_pipeline import run_pipeline
from customer_pipeline.rules import process
from customer_pipeline.simulator import Dataset

from .conftest import fast_settings
from .jsonserver import make_users
from .reference import expected_customers

NESTED = {"id": "uid", "email": "contact.email", "first_name": "name.first",
          "last_name": "name.last", "avatar": "photo.url"}  # fmt: skip
# What each simulator style needs said, with settings alone.
STYLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "page_number": ({}, {}),
    "offset": ({"pagination": "offset"}, {"paginator": "offset", "size_param": "limit"}),
    "link": ({"pagination": "link"}, {"paginator": "link", "data_path": ""}),
    "link without last": ({"pagination": "link", "link_last": False},
                          {"paginator": "link", "data_path": ""}),
    "cursor": ({"pagination": "cursor"}, {"paginator": "cursor", "next_path": "meta.next_cursor"}),
    "next_url": ({"pagination": "next_url"}, {"paginator": "next_url", "next_path": "links.next"}),
    "bare page_number": ({"envelope": "bare"}, {"data_path": ""}),
    "clamped offsets": ({"pagination": "offset", "clamp": True},
                        {"paginator": "offset", "size_param": "limit", "total_path": "nothing"}),
}  # fmt: skip
RANDOM_ACCESS = {"page_number", "offset", "link", "bare page_number", "clamped offsets"}
FAULTS = {"failure_rate": 0.2, "truncate_rate": 0.01, "dirty_rate": 0.1, "duplicate_rate": 0.1}


@pytest.mark.parametrize("fields", ["flat", "nested"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_every_style_pulls_every_record_exactly_once_under_faults(
    simulator: Any, tmp_path: Path, style: str, fields: str
) -> None:
    served, settings = STYLES[style]
    total, per_page, seed = 700, 7, 11
    base, sim = await simulator(total=total, per_page=per_page, seed=seed, latency_ms=1,
                                field_style=fields, **FAULTS, **served)  # fmt: skip
    result = await run_pipeline(fast_settings(
        base_url=base, output_dir=tmp_path, per_page=per_page, seed=seed, concurrency=8,
        max_retries=25, backoff_base=0.001, backoff_max=0.01,
        field=NESTED if fields == "nested" else {}, **settings))  # fmt: skip
    exported = orjson.loads(result.customers_path.read_bytes())["customers"]
    dataset = Dataset(total, seed, FAULTS["dirty_rate"], FAULTS["duplicate_rate"])
    assert result.complete, result.incomplete_reasons
    assert exported == expected_customers(dataset, per_page, seed)
    assert result.report["api"]["retries"] > 0 and sim.stats.errors_5xx > 0
    assert result.report["api"]["total_pages"] == 100
    if style in RANDOM_ACCESS:
        assert sim.stats.max_in_flight > 1
    else:
        assert sim.stats.max_in_flight == 1


def expected_json_server(seed: int) -> list[dict[str, Any]]:
    return [process(user, seed) for user in make_users(50)]


def exported(result: Any) -> list[dict[str, Any]]:
    return orjson.loads(result.customers_path.read_bytes())["customers"]  # type: ignore[no-any-return]


async def test_json_server_017_is_pulled_exactly_with_settings_alone(
    json_server_017: str, tmp_path: Path
) -> None:
    result = await run_pipeline(fast_settings(
        base_url=json_server_017, resource="/users", paginator="link", data_path="",
        page_param="_page", size_param="_limit", per_page=7, output_dir=tmp_path))  # fmt: skip
    assert result.complete and exported(result) == expected_json_server(42)
    api = result.report["api"]
    assert api["total_pages"] == 8 and api["requests"] == 8 and api["max_in_flight"] > 1


async def test_json_server_10_is_pulled_exactly_with_settings_alone(
    json_server_10: str, tmp_path: Path
) -> None:
    result = await run_pipeline(fast_settings(
        base_url=json_server_10, resource="/users", page_param="_page",
        size_param="_per_page", total_pages_path="pages", per_page=7,
        output_dir=tmp_path))  # fmt: skip
    assert result.complete and exported(result) == expected_json_server(42)
    api = result.report["api"]
    assert api["total_pages"] == 8 and api["requests"] == 8 and api["max_in_flight"] > 1


@pytest.mark.parametrize(
    "served",
    [
        *({"pagination": p} for p in ("page_number", "offset", "cursor", "link", "next_url")),
        {"pagination": "link", "field_style": "nested", "link_last": False},
        {"pagination": "offset", "envelope": "bare"},
    ],
    ids=lambda served: "-".join(str(v) for v in served.values()),
)
async def test_the_settings_the_simulator_announces_read_all_it_serves(
    simulator: Any, tmp_path: Path, served: dict[str, Any]
) -> None:
    base, sim = await simulator(total=60, per_page=7, **served)
    result = await run_pipeline(
        fast_settings(base_url=base, output_dir=tmp_path, **sim.config.run_settings())
    )
    assert result.complete and [c["customer_id"] for c in exported(result)] == list(range(1, 61))
