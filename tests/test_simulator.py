"""The simulator: reqres envelope, every pagination style, faults at their rates, by seed."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from customer_pipeline.cli import main
from customer_pipeline.models import ApiEnvelope, RawUser
from customer_pipeline.simulator import DIRT_KINDS, REAL_USERS, Dataset, SimulatorConfig

from .helpers import simulator_process


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
    # The duplicated users of a page show up again, in order, at the top of the next page.
    copies = [i for i in range(1, 101) if ds.duplicated(i)]
    page_2 = ds.page_records(2, 100)
    assert copies and page_2[: len(copies)] == [ds.duplicate_record(i) for i in copies]
    assert [r["id"] for r in page_2[: len(copies)]] == copies
    assert page_2[len(copies)] == ds.record(101) and len(page_2) == len(copies) + 100


def test_real_users_are_the_twelve_from_reqres() -> None:
    ds = Dataset(12, seed=42, dirty_rate=0, duplicate_rate=0)
    assert [ds.clean_user(i)["first_name"] for i in (1, 12)] == ["George", "Rachel"]
    assert len(REAL_USERS) == 12


def test_config_rejects_rates_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatorConfig(failure_rate=1.5)


def test_config_repr_masks_the_key() -> None:
    assert "k-123" not in repr(SimulatorConfig(api_key="k-123"))


# --- every pagination style ----------------------------------------------------------------

STYLES = ["page_number", "offset", "cursor", "link", "next_url"]
RANDOM_ACCESS = ["page_number", "offset", "link"]
USERS = "/api/users"
RETRYABLE = {429, 500, 502, 503, 504}


class Walker:
    """A tiny reference client: one style, retrying what any client must retry, no sleeps."""

    def __init__(self, http: httpx.AsyncClient, per_page: int) -> None:
        self.http = http
        self.per_page = per_page
        self.retries = 0

    async def get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """The response and its decoded body, after as many retries as the faults need."""
        for _ in range(80):
            try:
                response = await self.http.get(url, params=params)
            except httpx.TransportError:
                self.retries += 1
                continue
            if response.status_code in RETRYABLE:
                self.retries += 1
                continue
            assert response.status_code == 200, response.text
            try:
                return response, orjson.loads(response.content)
            except orjson.JSONDecodeError:  # a truncated body
                self.retries += 1
        raise AssertionError(f"{url} {params} kept failing")

    async def until_empty(self, params_of: Any) -> list[list[Any]]:
        """Pages in turn until an empty one or one identical to the one before (clamping)."""
        pages: list[list[Any]] = []
        for n in range(1_000):
            _, body = await self.get(USERS, params_of(n))
            if not body or (pages and body == pages[-1]):
                return pages
            pages.append(body)
        raise AssertionError("the walk never ended")

    async def chain(self, first: dict[str, Any], step: Any) -> list[list[Any]]:
        """Follow a chain: ``step(response, body)`` gives (records, next URL or params)."""
        pages: list[list[Any]] = []
        url, params = USERS, first
        for _ in range(1_000):
            response, body = await self.get(url, params)
            records, following = step(response, body)
            pages.append(records)
            if following is None:
                return pages
            if isinstance(following, str):
                url, params = following, None
            else:
                params = following
        raise AssertionError("the chain never ended")

    async def fan_out(self, params: list[dict[str, Any]], data: Any) -> list[list[Any]]:
        """Fetch the rest of a random-access listing concurrently, in order."""
        answers = await asyncio.gather(*(self.get(USERS, p) for p in params))
        return [data(body) for _, body in answers]

    async def walk(self, style: str, *, bare: bool = False) -> list[list[Any]]:
        """Every page of the listing, in order, as this style's client would pull it."""
        size = self.per_page
        if style == "page_number":
            if bare:
                return await self.until_empty(lambda n: {"page": n + 1, "per_page": size})
            _, first = await self.get(USERS, {"page": 1, "per_page": size})
            more = [{"page": p, "per_page": size} for p in range(2, first["total_pages"] + 1)]
            return [first["data"], *await self.fan_out(more, lambda b: b["data"])]
        if style == "offset":
            if bare:
                return await self.until_empty(lambda n: {"offset": n * size, "limit": size})
            _, first = await self.get(USERS, {"offset": 0, "limit": size})
            more = [{"offset": o, "limit": size} for o in range(size, first["total"], size)]
            return [first["data"], *await self.fan_out(more, lambda b: b["data"])]
        if style == "cursor":
            return await self.chain(
                {"per_page": size},
                lambda _, b: (
                    b["data"],
                    None
                    if b["meta"]["next_cursor"] is None
                    else {"per_page": size, "cursor": b["meta"]["next_cursor"]},
                ),
            )
        if style == "next_url":
            return await self.chain(
                {"per_page": size}, lambda _, b: (b["data"], b["links"]["next"])
            )
        assert style == "link"
        data = (lambda b: b) if bare else (lambda b: b["data"])
        response, first = await self.get(USERS, {"per_page": size})
        if "last" in response.links:
            last = int(httpx.URL(response.links["last"]["url"]).params["page"])
            more = [{"page": p, "per_page": size} for p in range(2, last + 1)]
            return [data(first), *await self.fan_out(more, data)]
        return await self.chain(
            {"per_page": size},
            lambda r, b: (data(b), r.links["next"]["url"] if "next" in r.links else None),
        )


async def walk(base: str, style: str, per_page: int, *, bare: bool = False) -> list[list[Any]]:
    async with httpx.AsyncClient(base_url=base) as http:
        return await Walker(http, per_page).walk(style, bare=bare)


def flatten(pages: list[list[Any]]) -> list[Any]:
    return [record for page in pages for record in page]


def expected_records(ds: Dataset, per_page: int) -> list[Any]:
    return flatten([ds.page_records(p, per_page) for p in range(1, ds.total_pages(per_page) + 1)])


def unnest(record: Any) -> Any:
    """The flat record behind a nested one (an independent inverse, for comparison)."""
    if not isinstance(record, dict):
        return record
    rest = dict(record)
    uid = rest.pop("uid")
    # Nested ids are strings; the id_as_string dirt flips its record's id to the other type.
    flat: dict[str, Any] = {
        "id": str(uid) if isinstance(uid, int) else int(uid) if uid.isdigit() else uid
    }
    for outer, inner, name in (
        ("contact", "email", "email"),
        ("name", "first", "first_name"),
        ("name", "last", "last_name"),
        ("photo", "url", "avatar"),
    ):
        if inner in rest.get(outer, {}):
            flat[name] = rest[outer][inner]
    for outer in ("contact", "name", "photo"):
        rest.pop(outer, None)
    return flat | rest


def ids(records: list[Any]) -> list[Any]:
    return [r.get("id", r.get("uid")) for r in records]


@pytest.mark.parametrize(
    ("style", "bare"),
    [(s, False) for s in STYLES] + [("page_number", True), ("offset", True), ("link", True)],
)
async def test_every_style_serves_every_user_once_and_in_order(
    simulator: Any, style: str, bare: bool
) -> None:
    envelope = "bare" if bare else "object"
    base, _ = await simulator(total=23, per_page=5, pagination=style, envelope=envelope)
    records = flatten(await walk(base, style, 5, bare=bare))
    assert ids(records) == list(range(1, 24))


@pytest.mark.parametrize("field_style", ["flat", "nested"])
@pytest.mark.parametrize("style", STYLES)
async def test_every_style_pulls_the_same_records_under_faults(
    simulator: Any, style: str, field_style: str
) -> None:
    faults = {"failure_rate": 0.2, "truncate_rate": 0.1, "drop_rate": 0.05}
    data = {"total": 200, "dirty_rate": 0.3, "duplicate_rate": 0.2, "seed": 3}
    base, sim = await simulator(
        per_page=7, pagination=style, field_style=field_style, **faults, **data
    )
    records = flatten(await walk(base, style, 7, bare=style == "link"))
    if field_style == "nested":
        records = [unnest(r) for r in records]
    ds = Dataset(200, seed=3, dirty_rate=0.3, duplicate_rate=0.2)
    assert records == expected_records(ds, 7)
    assert sim.stats.errors_5xx > 0 and sim.stats.truncated > 0 and sim.stats.dropped > 0


@pytest.mark.parametrize(("style", "bare"), [("page_number", True), ("offset", True)])
async def test_a_clamping_server_is_walked_to_its_end_once(
    simulator: Any, style: str, bare: bool
) -> None:
    base, _ = await simulator(total=23, per_page=5, pagination=style, envelope="bare", clamp=True)
    assert ids(flatten(await walk(base, style, 5, bare=bare))) == list(range(1, 24))


@pytest.mark.parametrize(
    ("style", "past_end", "last"),
    [
        ("page_number", {"page": 9, "per_page": 5}, {"page": 5, "per_page": 5}),
        ("offset", {"offset": 25, "limit": 5}, {"offset": 20, "limit": 5}),
        ("offset", {"offset": 23, "limit": 5}, {"offset": 18, "limit": 5}),
        ("link", {"page": 6, "per_page": 5}, {"page": 5, "per_page": 5}),
        ("next_url", {"page": 7, "per_page": 5}, {"page": 5, "per_page": 5}),
    ],
)
async def test_clamping_answers_the_last_page_again_past_the_end(
    simulator: Any, style: str, past_end: dict[str, int], last: dict[str, int]
) -> None:
    config = {"total": 23, "per_page": 5, "pagination": style, "duplicate_rate": 0.5}
    clamped, _ = await simulator(clamp=True, **config)
    plain, _ = await simulator(**config)

    def records(body: Any) -> Any:
        return body if isinstance(body, list) else body["data"]

    again = records((await get(clamped, USERS, params=past_end)).json())
    assert again and again == records((await get(clamped, USERS, params=last)).json())
    assert records((await get(plain, USERS, params=past_end)).json()) == []


async def test_link_header_carries_first_prev_next_and_last(simulator: Any) -> None:
    base, _ = await simulator(total=23, per_page=5, pagination="link")
    response = await get(base, USERS, params={"page": 3, "per_page": 5})
    links = {rel: httpx.URL(link["url"]) for rel, link in response.links.items()}
    assert {rel: url.params["page"] for rel, url in links.items()} == {
        "first": "1",
        "prev": "2",
        "next": "4",
        "last": "5",
    }
    assert all(str(url).startswith(base + USERS + "?") for url in links.values())
    assert all(url.params["per_page"] == "5" for url in links.values())
    first = await get(base, USERS, params={"per_page": 5})
    assert set(first.links) == {"first", "next", "last"}
    final = await get(base, str(links["last"]))
    assert set(final.links) == {"first", "prev", "last"}
    assert [u["id"] for u in final.json()] == [21, 22, 23]


async def test_no_link_last_leaves_rel_last_out_so_clients_walk_the_chain(
    simulator: Any,
) -> None:
    base, _ = await simulator(total=23, per_page=5, pagination="link", link_last=False)
    response = await get(base, USERS, params={"page": 2, "per_page": 5})
    assert set(response.links) == {"first", "prev", "next"}
    assert ids(flatten(await walk(base, "link", 5, bare=True))) == list(range(1, 24))


async def test_bare_and_object_bodies(simulator: Any) -> None:
    for style, envelope, kind in [
        ("page_number", "bare", list),
        ("offset", "bare", list),
        ("link", None, list),  # json-server 0.17: bare by default
        ("link", "object", dict),
        ("offset", None, dict),
    ]:
        base, _ = await simulator(total=8, pagination=style, envelope=envelope)
        body = (await get(base, USERS)).json()
        assert isinstance(body, kind), (style, envelope)
        records = body if kind is list else body["data"]
        assert [u["id"] for u in records] == [1, 2, 3, 4, 5, 6]
    base, _ = await simulator(total=8, pagination="offset")
    assert (await get(base, USERS, params={"offset": 6, "limit": 4})).json() == {
        "offset": 6,
        "limit": 4,
        "total": 8,
        "data": Dataset(8, 42, 0, 0).page_records(2, 6)[:2],
    }


async def test_cursor_is_opaque_and_null_on_the_last_page(simulator: Any) -> None:
    base, _ = await simulator(total=8, pagination="cursor")
    first = (await get(base, USERS)).json()
    assert set(first) == {"data", "meta"}  # no totals
    cursor = first["meta"]["next_cursor"]
    assert isinstance(cursor, str) and not cursor.strip().lstrip("-").isdigit()
    with pytest.raises(ValueError):
        int(cursor, 0)
    second = (await get(base, USERS, params={"cursor": cursor})).json()
    assert [u["id"] for u in second["data"]] == [7, 8]
    assert second["meta"]["next_cursor"] is None
    bad = await get(base, USERS, params={"cursor": "6"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


async def test_next_url_is_absolute_and_null_on_the_last_page(simulator: Any) -> None:
    base, _ = await simulator(total=8, pagination="next_url")
    first = (await get(base, USERS)).json()
    assert first["links"]["next"].startswith(base + USERS + "?")
    second = (await get(base, first["links"]["next"])).json()
    assert [u["id"] for u in second["data"]] == [7, 8] and second["links"]["next"] is None


async def test_nested_fields_rename_and_nest_with_string_ids(simulator: Any) -> None:
    base, _ = await simulator(total=12, field_style="nested")
    george = (await get(base, USERS)).json()["data"][0]
    assert george == {
        "uid": "1",
        "contact": {"email": "george.bluth@reqres.in"},
        "name": {"first": "George", "last": "Bluth"},
        "photo": {"url": "https://reqres.in/img/faces/1-image.jpg"},
    }
    assert (await get(base, f"{USERS}/2")).json()["data"]["name"]["first"] == "Janet"


def test_nested_records_keep_their_dirt() -> None:
    ds = Dataset(3_000, seed=5, dirty_rate=1.0, duplicate_rate=0, field_style="nested")
    flat = Dataset(3_000, seed=5, dirty_rate=1.0, duplicate_rate=0)
    by_kind: dict[str | None, int] = {}
    for user_id in range(1, 3_001):
        by_kind.setdefault(flat.dirt(user_id), user_id)
    assert set(by_kind) == set(DIRT_KINDS)
    shown = {kind: ds.record(user_id) for kind, user_id in by_kind.items()}
    assert " at " in shown["email_invalid"]["contact"]["email"]
    assert "email" not in shown["email_missing"].get("contact", {})
    assert shown["first_name_blank"]["name"]["first"] == "   "
    assert "last" not in shown["last_name_missing"]["name"]
    assert shown["avatar_invalid"]["photo"]["url"].startswith("ftp://")
    assert shown["id_as_string"]["uid"] == by_kind["id_as_string"]  # flipped: an int here
    assert shown["padded_names"]["name"]["first"].startswith("  ")
    assert shown["extra_keys"]["job"] == "leader"
    assert shown["id_unusable"]["uid"].startswith("user-")
    assert isinstance(shown["not_an_object"], list)
    for kind, user_id in by_kind.items():
        assert unnest(shown[kind]) == flat.record(user_id), kind


@pytest.mark.parametrize("style", STYLES)
async def test_every_fault_applies_to_every_style(simulator: Any, style: str) -> None:
    base, sim = await simulator(pagination=style, failure_rate=1.0)
    assert (await get(base, USERS)).status_code in (500, 503)
    assert sim.stats.errors_5xx == 1
    base, sim = await simulator(pagination=style, truncate_rate=1.0)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads((await get(base, USERS)).content)
    assert sim.stats.truncated == 1
    base, sim = await simulator(pagination=style, drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        await get(base, USERS)
    assert sim.stats.dropped == 1
    base, sim = await simulator(pagination=style, rate_limit=1)
    async with httpx.AsyncClient(base_url=base) as http:
        statuses = [(await http.get(USERS)).status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses
    assert sim.stats.rate_limited == statuses.count(429)
    base, sim = await simulator(pagination=style, api_key="k-1")
    assert (await get(base, USERS)).status_code == 401
    assert sim.stats.unauthorized == 1


@pytest.mark.parametrize("style", RANDOM_ACCESS)
async def test_random_access_styles_keep_several_requests_in_flight(
    simulator: Any, style: str
) -> None:
    base, sim = await simulator(total=60, per_page=5, pagination=style, latency_ms=20)
    async with httpx.AsyncClient(base_url=base) as http:
        await Walker(http, 5).walk(style, bare=style == "link")
        stats = (await http.get("/_simulator/stats")).json()
    assert stats["max_in_flight"] > 1 and sim.stats.max_in_flight == stats["max_in_flight"]


async def test_reqres_pages_are_byte_for_byte_what_they_were(simulator: Any) -> None:
    base, _ = await simulator(total=203, dirty_rate=0.4, duplicate_rate=0.3, seed=7)
    digest = hashlib.sha256()
    async with httpx.AsyncClient(base_url=base) as http:
        for per_page in (6, 50):
            for page in range(0, -(-203 // per_page) + 1):
                params = {"page": page, "per_page": per_page}
                digest.update((await http.get(USERS, params=params)).content)
    # Measured on the single-module simulator before pagination styles existed.
    assert digest.hexdigest() == (
        "7554badb13a51bcbc883d50c347daba8b7194309db19f100eae40cde74b9902a"
    )


def test_config_rejects_a_bare_body_for_styles_that_need_the_object() -> None:
    for style in ("cursor", "next_url"):
        with pytest.raises(ValueError, match="envelope"):
            SimulatorConfig(pagination=style, envelope="bare")
    with pytest.raises(ValueError, match="pagination"):
        SimulatorConfig(pagination="pages")


def test_simulate_help_shows_every_flag_and_an_example_per_style() -> None:
    text = CliRunner().invoke(main, ["simulate", "--help"]).output
    for flag in ("--pagination", "--envelope", "--field-style", "--clamp", "--no-link-last"):
        assert flag in text
    for style in STYLES:
        assert f"simulate --pagination {style}" in text


def test_simulate_refuses_a_bare_cursor_with_exit_2() -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--envelope", "bare", "--pagination", "cursor", "--port", "0"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--envelope'" in result.output and "cursor" in result.output
    assert "Traceback" not in result.output


def test_simulate_flags_reach_the_served_simulator() -> None:
    with simulator_process(
        "--pagination", "link", "--no-link-last", "--envelope", "object", "--field-style",
        "nested", "--clamp", "--failure-rate", "0", "--rate-limit", "0", "--latency-ms", "0",
        "--total", "12",
    ) as base:  # fmt: skip
        past = httpx.get(f"{base}{USERS}", params={"page": 9})
    assert set(past.links) == {"first", "prev"}
    assert past.json()["data"][-1]["uid"] == "12"  # clamped to the last page, nested
