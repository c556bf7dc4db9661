"""The floor: bare httpx (aiohttp transport) fetch, JSON parse and orjson write, nothing else.

    python benchmarks/floor.py BASE_URL PER_PAGE CONCURRENCY OUT_FILE

Page 1, then pages 2..total_pages by a pool of CONCURRENCY workers; failed requests are
simply tried again (no backoff); raw records are written as JSON lines. Prints a JSON line
with its figures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport


async def main(base_url: str, per_page: int, concurrency: int, out: str) -> None:
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    records = 0
    requests = 0
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30) as http:

        async def page(n: int, envelope: bool = False) -> Any:
            nonlocal requests
            while True:
                async with semaphore:
                    requests += 1
                    try:
                        r = await http.get(
                            f"{base_url}/api/users", params={"page": n, "per_page": per_page}
                        )
                        if r.status_code == 200:
                            doc = orjson.loads(r.content)
                            return doc if envelope else doc["data"]
                    except (httpx.TransportError, orjson.JSONDecodeError, KeyError):
                        pass

        first = await page(1, envelope=True)
        assert isinstance(first, dict)
        pages = iter(range(2, first["total_pages"] + 1))
        with open(out, "wb") as handle:  # noqa: ASYNC230 - the floor writes like a script would
            handle.write(orjson.dumps(first["data"]) + b"\n")
            records += len(first["data"])

            async def worker() -> None:
                nonlocal records
                for n in pages:
                    data = await page(n)
                    handle.write(orjson.dumps(data) + b"\n")
                    records += len(data)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(orjson.dumps({"records": records, "requests": requests, "run_s": elapsed}).decode())


if __name__ == "__main__":
    base, per_page, concurrency, out = sys.argv[1:5]
    asyncio.run(main(base, int(per_page), int(concurrency), out))
