"""The simulator: reqres envelope, faults at their rates, determinism by seed."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from customer_pipeline.models import ApiEnvelope, RawUser
from customer_pipeline.simulator import REAL_USERS, Dataset, SimulatorConfig


async def get(base: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as http:
        return await http.get(path, **kw)


async def test_serves_the_reqres_envelope_with_the_real_users_first(simulator: Any) -> None:
    base, _ = await simulator()
    body = (await get(base, "/api/users", params={"page": 1})).json()
    assert set(body) >= {"page", "per_page", "total", "total_pages", "data", "support"}
    ApiEnvelope.model_validate(body)
    for user in body["data"]:
        RawUser.model_validate(user)
    assert (body["page"], body["per_page"], body["total"], body["total_pages"]) == (1, 6, 12, 2)
    george = body["data"][0]
    assert george == {
        "id": 1,
        "email": "george.bluth@reqres.in",
        "first_name": "George",
        "last_name": "Bluth",
        "avatar": "https://reqres.in/img/faces/1-image.jpg",
    }
    page2 = (await get(base, "/api/users", params={"page": 2})).json()
    assert [u["first_name"] + " " + u["last_name"] for u in page2["data"]][-1] == "Rachel Howell"
    beyond = (await get(base, "/api/users", params={"page": 3})).json()
    assert beyond["data"] == []


async def test_per_page_and_synthetic_users(simulator: Any) -> None:
    base, _ = await simulator(total=250)
    body = (await get(base, "/api/users", params={"page": 3, "per_page": 100})).json()
    assert body["total_pages"] == 3
    assert [u["id"] for u in body["data"]] == list(range(201, 251))
    assert all(u["email"].endswith("@example.com") for u in body["data"])


async def test_single_user_and_404_for_a_missing_one(simulator: Any) -> None:
    base, _ = await simulator()
    assert (await get(base, "/api/users/2")).json()["data"]["first_name"] == "Janet"
    missing = await get(base, "/api/users/23")
    assert missing.status_code == 404 and missing.json() == {}


async def test_api_key_is_checked_when_configured(simulator: Any) -> None:
    base, sim = await simulator(api_key="k-123")
    assert (await get(base, "/api/users")).status_code == 401
    ok = await get(base, "/api/users", headers={"x-api-key": "k-123"})
    assert ok.status_code == 200
    assert sim.stats.unauthorized == 1


async def test_fault_rates_over_many_requests(simulator: Any) -> None:
    base, sim = await simulator(failure_rate=0.2, truncate_rate=0.1, total=60)
    statuses: dict[str, int] = {"5xx": 0, "ok": 0, "truncated": 0, "html": 0}
    n = 1500
    async with httpx.AsyncClient(base_url=base) as http:
        for i in range(n):
            r = await http.get("/api/users", params={"page": i % 10 + 1})
            if r.status_code in (500, 503):
                statuses["5xx"] += 1
                statuses["html"] += r.headers["content-type"].startswith("text/html")
                continue
            assert r.status_code == 200
            try:
                orjson.loads(r.content)
                statuses["ok"] += 1
            except orjson.JSONDecodeError:
                statuses["truncated"] += 1
    assert 0.16 < statuses["5xx"] / n < 0.24
    assert 0.3 < statuses["html"] / statuses["5xx"] < 0.7  # both JSON and HTML bodies
    assert 0.07 < statuses["truncated"] / (n - statuses["5xx"]) < 0.13
    assert sim.stats.errors_5xx == statuses["5xx"]


async def test_dropped_connections_are_transport_errors(simulator: Any) -> None:
    base, sim = await simulator(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        await get(base, "/api/users")
    assert sim.stats.dropped == 1


async def test_rate_limit_answers_429_with_retry_after(simulator: Any) -> None:
    base, sim = await simulator(rate_limit=5)
    async with httpx.AsyncClient(base_url=base) as http:
        answers = [await http.get("/api/users") for _ in range(12)]
    limited = [r for r in answers if r.status_code == 429]
    assert 5 <= len(limited) <= 7  # a one-second burst of 5 passes, the rest are told to wait
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert sim.stats.rate_limited == len(limited)


def test_dataset_is_deterministic_by_seed() -> None:
    a = Dataset(500, seed=1, dirty_rate=0.3, duplicate_rate=0.1)
    b = Dataset(500, seed=1, dirty_rate=0.3, duplicate_rate=0.1)
    c = Dataset(500, seed=2, dirty_rate=0.3, duplicate_rate=0.1)
    pages_a = [a.page_records(p, 50) for p in range(1, 11)]
    assert pages_a == [b.page_records(p, 50) for p in range(1, 11)]
    assert pages_a != [c.page_records(p, 50) for p in range(1, 11)]


def test_dataset_dirt_and_duplicates_follow_their_rates() -> None:
    ds = Dataset(20_000, seed=42, dirty_rate=0.1, duplicate_rate=0.05)
    dirty = sum(ds.dirt(i) is not None for i in range(1, 20_001))
    dups = sum(ds.duplicated(i) for i in range(1, 20_001))
    assert 0.09 < dirty / 20_000 < 0.11
    assert 0.04 < dups / 20_000 < 0.06
    # A duplicate shows up again at the top of the next page.
    dup_id = next(i for i in range(1, 95) if ds.duplicated(i))
    page = (dup_id - 1) // 100 + 1
    ids_next = [
        r.get("id") if isinstance(r, dict) else None for r in ds.page_records(page + 1, 100)
    ]
    assert dup_id in ids_next[:10] or str(dup_id) in ids_next[:10]


def test_real_users_are_the_twelve_from_reqres() -> None:
    ds = Dataset(12, seed=42, dirty_rate=0, duplicate_rate=0)
    assert [ds.clean_user(i)["first_name"] for i in (1, 12)] == ["George", "Rachel"]
    assert len(REAL_USERS) == 12


def test_config_rejects_rates_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatorConfig(failure_rate=1.5)


def test_config_repr_masks_the_key() -> None:
    assert "k-123" not in repr(SimulatorConfig(api_key="k-123"))
