"""A 429's pause voids the slots already handed out, and the rate-limit headers pace one by one."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import respx

from customer_pipeline.http import Fetcher, FetchPolicy, Request
from customer_pipeline.http._redis import redis_client
from customer_pipeline.http.shared_limit import SharedRateLimiter
from customer_pipeline.observe import Bus
from customer_pipeline.settings import DatabaseUrl

from .conftest import SECRET_KEY
from .redis import RedisServer

ORIGIN = "http://api.test"


class GatedSleeps:
    """A sleep that records each wait; the first one is held until the test opens the gate."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.waits: list[float] = []
        self.granted = asyncio.Event()
        self._gate = gate

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) == 1:
            self.granted.set()
            await self._gate.wait()


class FakeTime:
    """One clock for every task: a sleep moves it to its end, never back, and waits for none."""

    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)

    def clock(self) -> float:
        return self.now


async def test_a_429_in_one_process_voids_the_slots_others_already_hold(
    redis_server: RedisServer,
) -> None:
    gate = asyncio.Event()
    b_sleeps, c_sleeps = GatedSleeps(gate), GatedSleeps(gate)

    def limiter(sleep: GatedSleeps | None = None) -> SharedRateLimiter:
        client = redis_client(DatabaseUrl(redis_server.url))
        return SharedRateLimiter(client, ORIGIN, 10, where="redis",
                                 sleep=sleep or GatedSleeps(asyncio.Event()))  # fmt: skip

    a, b, c = limiter(), limiter(b_sleeps), limiter(c_sleeps)
    try:
        await a.acquire()  # slot 0; B and C get the next two and sleep towards them
        b_task = asyncio.create_task(b.acquire())
        await b_sleeps.granted.wait()
        c_task = asyncio.create_task(c.acquire())
        await c_sleeps.granted.wait()
        await a.pause(2.0)  # A's scripted 429 while B and C wait for their slots
        gate.set()
        await asyncio.gather(b_task, c_task)
    finally:
        for each in (a, b, c):
            await each.close()
    assert [round(w, 1) for w in (b_sleeps.waits[0], c_sleeps.waits[0])] == [0.1, 0.2]
    # Neither sends on its old slot: each takes a new one after the pause, 0.1 s apart.
    after = sorted([b_sleeps.waits[-1], c_sleeps.waits[-1]])
    assert len(b_sleeps.waits) == len(c_sleeps.waits) == 2
    assert 1.8 < after[0] <= 2.0 and 0.09 < after[1] - after[0] < 0.11


class FakeLimiter:
    """A rate limit on the fake clock: each acquire takes the next slot, 0.1 s apart."""

    def __init__(self, time: FakeTime) -> None:
        self._time = time
        self._next = 0.0

    async def acquire(self) -> None:
        slot = max(self._time.now, self._next)
        self._next = slot + 0.1
        if slot > self._time.now:
            await self._time.sleep(slot - self._time.now)


async def test_after_its_own_429_a_process_sends_its_workers_one_slot_apart() -> None:
    policy = FetchPolicy(concurrency=4, rate_limit=10, max_retries=2, backoff_base=0.001,
                         backoff_max=5, timeout=5, max_response_bytes=10_000)  # fmt: skip
    time = FakeTime()
    sent: list[float] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(time.now)
        await asyncio.sleep(0)
        if len(sent) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(200, content=b"{}")

    with respx.mock:
        respx.get(url__startswith=ORIGIN).mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            fetcher = Fetcher(http, policy, Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                              sleep=time.sleep, clock=time.clock,
                              limiter=FakeLimiter(time))  # fmt: skip
            await asyncio.gather(*(fetcher.fetch(Request(f"{ORIGIN}/p{i}", f"page {i}"),
                                                 lambda r: r.body) for i in range(4)))
    after_pause = sorted(t for t in sent if t >= 2.0)
    assert len(sent) == 5 and len(after_pause) >= 3, sent
    gaps = [b - a for a, b in itertools.pairwise(after_pause)]
    assert min(gaps) >= 0.099, sent  # one slot apart after the pause, not all at its end


async def test_rate_limit_headers_spread_the_waiting_workers_instead_of_one_burst() -> None:
    policy = FetchPolicy(concurrency=2, rate_limit=0, max_retries=2, backoff_base=0.001,
                         backoff_max=30, timeout=5, max_response_bytes=10_000)  # fmt: skip
    time = FakeTime()
    sent: list[float] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(time.now)
        await asyncio.sleep(0)  # another worker may start meanwhile, as on a network
        # None left until the reset, 3 s away: one request every 3 s at most.
        return httpx.Response(200, content=b"{}", headers={"RateLimit-Remaining": "0",
                                                           "RateLimit-Reset": "3"})  # fmt: skip

    with respx.mock:
        respx.get(url__startswith=ORIGIN).mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            fetcher = Fetcher(http, policy, Bus(), api_key=SECRET_KEY, key_origin=ORIGIN,
                              sleep=time.sleep, clock=time.clock)  # fmt: skip
            await asyncio.gather(*(fetcher.fetch(Request(f"{ORIGIN}/p{i}", f"page {i}"),
                                                 lambda r: r.body) for i in range(6)))
    # Once the headers have spoken, one request every 3 s: never two at the same moment.
    later = sent[2:]
    assert len(sent) == 6 and later == sorted(later), sent
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(later)), sent
