"""A reqres-compatible API simulator that misbehaves on purpose, reproducibly.

``GET /api/users?page=&per_page=`` answers the reqres envelope; ``GET /api/users/{id}`` one
user or 404 ``{}``. The data (the 12 real reqres users, then synthetic ones) and its dirt and
duplicates are a pure function of the seed (``Dataset``), so tests know the exact expected
customers. Faults (5xx, 429 from a token bucket, latency, truncated bodies, dropped
connections) are drawn per request from a seeded generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from ._random import stable_unit, stable_units

REAL_USERS = [
    (1, "George", "Bluth"),
    (2, "Janet", "Weaver"),
    (3, "Emma", "Wong"),
    (4, "Eve", "Holt"),
    (5, "Charles", "Morris"),
    (6, "Tracey", "Ramos"),
    (7, "Michael", "Lawson"),
    (8, "Lindsay", "Ferguson"),
    (9, "Tobias", "Funke"),
    (10, "Byron", "Fields"),
    (11, "George", "Edwards"),
    (12, "Rachel", "Howell"),
]
FIRST_NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Femi",
    "Gus",
    "Hana",
    "Ivo",
    "June",
    "Kai",
    "Lena",
    "Marta",
    "Noor",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sven",
    "Tess",
]
LAST_NAMES = [
    "Abbott",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Gupta",
    "Hughes",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Park",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
]
SUPPORT = {
    "url": "https://contentcaddy.io?utm_source=reqres&utm_medium=json&utm_campaign=referral",
    "text": "Tired of writing endless social media content? Let Content Caddy generate it for you.",
}
# Each kind of dirt a record can carry; the ones marked "rejected" make it unusable.
DIRT_KINDS = (
    "email_invalid",
    "email_missing",
    "first_name_blank",
    "last_name_missing",
    "avatar_invalid",
    "id_as_string",
    "padded_names",
    "extra_keys",
    "id_unusable",  # rejected
    "not_an_object",  # rejected
)


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulator serves and how it misbehaves. Rates are per request or record."""

    total: int = 12
    per_page: int = 6
    failure_rate: float = 0.2
    rate_limit: float = 20.0
    latency_ms: float = 50.0
    dirty_rate: float = 0.0
    duplicate_rate: float = 0.0
    truncate_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 42
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("failure_rate", "dirty_rate", "duplicate_rate", "truncate_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.total < 0 or self.per_page < 1:
            raise ValueError("total must be >= 0 and per_page >= 1")
        if self.rate_limit < 0 or self.latency_ms < 0:
            raise ValueError("rate_limit and latency_ms must be >= 0")

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={'***' if k == 'api_key' and v else v!r}" for k, v in self.__dict__.items()
        )
        return f"SimulatorConfig({fields})"


class Dataset:
    """The users behind the simulator, with their dirt and duplicates: pure in the seed."""

    def __init__(self, total: int, seed: int, dirty_rate: float, duplicate_rate: float) -> None:
        self.total = total
        self.seed = seed
        self.dirty_rate = dirty_rate
        self.duplicate_rate = duplicate_rate

    def clean_user(self, user_id: int) -> dict[str, Any]:
        """The user as a well-behaved API would send it."""
        if user_id <= len(REAL_USERS):
            _, first, last = REAL_USERS[user_id - 1]
            email = f"{first.lower()}.{last.lower()}@reqres.in"
        else:
            a, b = stable_units(self.seed, user_id, b"names", 2)
            first = FIRST_NAMES[int(a * len(FIRST_NAMES))]
            last = LAST_NAMES[int(b * len(LAST_NAMES))]
            email = f"{first.lower()}.{last.lower()}.{user_id}@example.com"
        return {
            "id": user_id,
            "email": email,
            "first_name": first,
            "last_name": last,
            "avatar": f"https://reqres.in/img/faces/{user_id}-image.jpg",
        }

    def dirt(self, user_id: int) -> str | None:
        """Which kind of dirt this user's record carries, if any."""
        pick, kind = stable_units(self.seed, user_id, b"dirt", 2)
        if pick >= self.dirty_rate:
            return None
        return DIRT_KINDS[int(kind * len(DIRT_KINDS))]

    def record(self, user_id: int) -> Any:
        """The record as served, dirt included."""
        user = self.clean_user(user_id)
        kind = self.dirt(user_id)
        if kind is None:
            return user
        if kind == "email_invalid":
            user["email"] = user["email"].replace("@", " at ")
        elif kind == "email_missing":
            del user["email"]
        elif kind == "first_name_blank":
            user["first_name"] = "   "
        elif kind == "last_name_missing":
            del user["last_name"]
        elif kind == "avatar_invalid":
            user["avatar"] = "ftp://faces/" + str(user_id)
        elif kind == "id_as_string":
            user["id"] = str(user_id)
        elif kind == "padded_names":
            user["first_name"] = f"  {user['first_name']} "
            user["last_name"] = f"\t{user['last_name']}  "
        elif kind == "extra_keys":
            user["job"] = "leader"
            user["meta"] = {"nested": [1, 2, {"x": None}]}
        elif kind == "id_unusable":
            user["id"] = f"user-{user_id}"
        else:  # not_an_object
            return [user_id, user["email"]]
        return user

    def duplicated(self, user_id: int) -> bool:
        """Whether this user shows up again at the top of the next page."""
        return stable_unit(self.seed, user_id, b"dup") < self.duplicate_rate

    def duplicate_record(self, user_id: int) -> Any:
        """The second copy: fixed if the first was dirty, else degraded or identical."""
        if self.dirt(user_id) is not None:
            return self.clean_user(user_id)
        if stable_unit(self.seed, user_id, b"dupkind") < 0.5:
            user = self.clean_user(user_id)
            del user["avatar"]
            return user
        return self.clean_user(user_id)

    def total_pages(self, per_page: int) -> int:
        return math.ceil(self.total / per_page)

    def page_records(self, page: int, per_page: int) -> list[Any]:
        """The records of one listing page, duplicates from the previous page first."""
        if page < 1:
            return []
        records: list[Any] = []
        previous_first = (page - 2) * per_page + 1
        if page > 1:
            for user_id in range(
                previous_first, min(self.total, previous_first + per_page - 1) + 1
            ):
                if self.duplicated(user_id):
                    records.append(self.duplicate_record(user_id))
        first = (page - 1) * per_page + 1
        for user_id in range(first, min(self.total, first + per_page - 1) + 1):
            records.append(self.record(user_id))
        return records


class _TokenBucket:
    """Server-side rate limit: ``rate`` requests per second, bursts of up to one second's."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class SimulatorStats:
    """What the simulator served, for tests and benchmarks."""

    requests: int = 0
    ok: int = 0
    errors_5xx: int = 0
    rate_limited: int = 0
    truncated: int = 0
    dropped: int = 0
    unauthorized: int = 0
    max_in_flight: int = 0


class Simulator:
    """The aiohttp application and its state."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dataset = Dataset(config.total, config.seed, config.dirty_rate, config.duplicate_rate)
        self.stats = SimulatorStats()
        self._rng = random.Random(config.seed)
        self._bucket = _TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self._in_flight = 0
        # Big enough for the benchmarks' 10,000 pages: rendering must never be the bottleneck.
        self._page_body = lru_cache(maxsize=16_384)(self._render_page)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/users", self.list_users)
        app.router.add_get("/api/users/{user_id}", self.get_user)
        app.router.add_get("/_simulator/stats", self.get_stats)
        return app

    def _render_page(self, page: int, per_page: int) -> bytes:
        data = self.dataset.page_records(page, per_page)
        return orjson.dumps(
            {
                "page": page,
                "per_page": per_page,
                "total": self.dataset.total,
                "total_pages": self.dataset.total_pages(per_page),
                "data": data,
                "support": SUPPORT,
            }
        )

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.api_key
        return key is None or request.headers.get("x-api-key") == key

    async def _misbehave(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the per-request faults; a response to send instead, or None to go on."""
        cfg = self.config
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _json({"error": "Missing API key"}, status=401)
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            self.stats.rate_limited += 1
            return _json(
                {"error": "Too many requests"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000 * self._rng.uniform(0.5, 1.5))
        roll = self._rng.random()
        if roll < cfg.failure_rate:
            self.stats.errors_5xx += 1
            status = 500 if self._rng.random() < 0.5 else 503
            if self._rng.random() < 0.5:
                return _json({"error": "Internal error"}, status=status)
            return web.Response(
                status=status,
                text="<html><body><h1>Server Error</h1></body></html>",
                content_type="text/html",
            )
        roll -= cfg.failure_rate
        if roll < cfg.drop_rate:
            self.stats.dropped += 1
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPInternalServerError()  # never delivered: the socket is gone
        return None

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            if (fault := await self._misbehave(request)) is not None:
                return fault
            try:
                page = int(request.query.get("page", "1"))
                per_page = int(request.query.get("per_page", str(self.config.per_page)))
            except ValueError:
                return _json({"error": "page and per_page must be integers"}, status=400)
            if per_page < 1 or per_page > 10_000:
                return _json({"error": "per_page must be between 1 and 10000"}, status=400)
            body = self._page_body(page, per_page)
            if self._rng.random() < self.config.truncate_rate:
                self.stats.truncated += 1
                body = body[: max(1, len(body) // 2)]
            self.stats.ok += 1
            return web.Response(body=body, content_type="application/json")
        finally:
            self._in_flight -= 1

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _json({"error": "Missing API key"}, status=401)
        try:
            user_id = int(request.match_info["user_id"])
        except ValueError:
            return _json({}, status=404)
        if not 1 <= user_id <= self.dataset.total:
            return _json({}, status=404)
        return _json({"data": self.dataset.record(user_id), "support": SUPPORT})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        """What was served so far (for tests and benchmarks in another process)."""
        return _json(dataclasses.asdict(self.stats))


def _json(doc: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, headers=headers, content_type="application/json"
    )


@asynccontextmanager
async def serve(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[str, Simulator]]:
    """Serve the simulator on ``host:port`` (0 = a free port); yields (base_url, simulator)."""
    simulator = Simulator(config)
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        yield f"http://{host}:{bound_port}", simulator
    finally:
        await runner.cleanup()
