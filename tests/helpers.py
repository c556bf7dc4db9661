"""Test helpers shared by several modules: a paged mock API and a simulator process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import respx

from .conftest import BASE_URL


def pages_api(
    failing: set[int], seen: list[int] | None = None, total_pages: int = 8
) -> respx.MockRouter:
    """6 complete users a page; pages in ``failing`` answer 500 while they are in it.

    Every requested page number is appended to ``seen``.
    """
    router = respx.mock(assert_all_called=False)

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if seen is not None:
            seen.append(page)
        if page in failing:
            return httpx.Response(500)
        users = [
            {
                "id": i,
                "email": f"u{i}@x.io",
                "first_name": "A",
                "last_name": "B",
                "avatar": "https://x.io/a.png",
            }
            for i in range(page * 6 - 5, page * 6 + 1)
        ]
        return httpx.Response(200, json={"total_pages": total_pages, "data": users})

    router.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
    return router


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """``customer-pipeline simulate`` in its own process on a free port; stopped after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "customer_pipeline", "simulate", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], poll_s: float = 0.5) -> Iterator[int]:
    """``handler`` served from a thread on a free loopback port (yielded), stopped after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(poll_s,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
