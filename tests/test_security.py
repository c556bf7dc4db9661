"""The key stays home: no redirects with it, TLS verified, nowhere in logs or files."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from contextlib import AsyncExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from customer_pipeline import ApiError, ApiUnreachableError, ReqresClient, run_pipeline
from customer_pipeline.cli import main
from customer_pipeline.http import make_http_client
from customer_pipeline.settings import Secret

from .conftest import SECRET_KEY, fast_settings
from .helpers import http_server


async def serve(handler: Any, stack: AsyncExitStack) -> int:
    """Serve ``handler`` for every GET on a free loopback port until ``stack`` closes."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return int(runner.addresses[0][1])


@pytest.fixture
async def two_servers() -> Any:
    """Server A redirects every request to server B, which records what reaches it."""
    reached: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"total_pages": 1, "data": [{"id": 1}]})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(where["to"])

    async with AsyncExitStack() as stack:
        port_b = await serve(record, stack)
        targets = {"port": f"http://127.0.0.1:{port_b}/api/users?page=1",
                   "host": f"http://localhost:{port_b}/api/users?page=1",
                   "scheme": f"https://127.0.0.1:{port_b}/api/users?page=1"}  # fmt: skip
        where = {"to": targets["port"]}
        port_a = await serve(redirect, stack)
        yield f"http://127.0.0.1:{port_a}", targets, where, reached


@pytest.mark.parametrize("kind", ["port", "host", "scheme"])
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_redirect_to_another_origin_is_not_followed_with_the_key(
    two_servers: Any, kind: str, transport: str
) -> None:
    url_a, targets, where, reached = two_servers
    where["to"] = targets[kind]
    settings = fast_settings(base_url=url_a, transport=transport)
    async with ReqresClient(settings) as client:
        with pytest.raises(ApiError, match="redirect") as info:
            await client.fetch_page(1)
    assert targets[kind] in str(info.value)  # says where it was sent, so the user can decide
    assert reached == []  # nothing, let alone the key, went to the other origin
    assert SECRET_KEY not in str(info.value)


def test_tls_is_verified_by_default_and_off_only_when_asked() -> None:
    for transport in ("aiohttp", "httpx"):
        verified = make_http_client(fast_settings(transport=transport))
        unverified = make_http_client(fast_settings(transport=transport, verify_tls=False))
        assert ssl_mode(verified) == ssl.CERT_REQUIRED
        assert ssl_mode(unverified) == ssl.CERT_NONE


def ssl_mode(http: Any) -> ssl.VerifyMode:
    transport = getattr(http._transport, "inner", http._transport)  # under SeamTransport
    context = getattr(transport, "ssl_context", None)
    if context is None:  # httpx's own transport keeps it on its connection pool
        context = transport._pool._ssl_context
    return context.verify_mode  # type: ignore[no-any-return]


def test_insecure_flag_warns_loudly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", "--insecure", "--base-url", "ftp://bad", "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 2  # the bad URL is refused first; no warning for nothing
    result = CliRunner().invoke(
        main,
        ["run", "--insecure", "--base-url", "http://127.0.0.1:9", "--max-retries", "0",
         "--output-dir", str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert "TLS certificate verification is OFF" in result.output


async def test_distinctive_key_is_in_no_file_after_an_incomplete_run(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(api_key=SECRET_KEY, total=300, failure_rate=0.5, dirty_rate=0.3)
    # One request at a time: the seeded faults fall on the same requests every run, and with
    # seed 42 page 1 gets through while later pages fail twice.
    settings = fast_settings(
        base_url=base, output_dir=tmp_path, max_retries=1, log_level="DEBUG", concurrency=1
    )
    result = await run_pipeline(settings)
    assert result.exit_code == 3 and result.failed_pages and result.rejected_path is not None
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == [".checkpoint.sqlite3", "pipeline.log", "processed_customers.json",
                     "rejected_records.jsonl", "summary_report.json"]  # fmt: skip
    for path in tmp_path.rglob("*"):
        assert SECRET_KEY.encode() not in path.read_bytes(), path


@contextlib.contextmanager
def redirecting_server(location: str) -> Iterator[str]:
    """A loopback server answering every GET with a 302 to ``location``; stopped after."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    with http_server(Redirect) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("progress", ["--no-progress", "--progress"])
def test_a_redirect_carrying_the_key_is_redacted_on_the_terminal(
    tmp_path: Path, progress: str
) -> None:
    location = f"http://127.0.0.1:9/api/users?api_key={SECRET_KEY}"
    with redirecting_server(location) as url:
        result = CliRunner().invoke(
            main,
            ["run", "--base-url", url, "--api-key", SECRET_KEY, "--output-dir", str(tmp_path),
             progress],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "error: HTTP 302 redirect" in result.output and "api_key=***" in result.output
    assert SECRET_KEY not in result.output
    assert SECRET_KEY not in (tmp_path / "pipeline.log").read_text()


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_a_key_with_a_line_ending_is_refused_before_any_request(
    tmp_path: Path, ending: str
) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--api-key", SECRET_KEY + ending, "--base-url", "http://127.0.0.1:9",
         "--output-dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid api_key")
    assert "Windows line endings" in result.output
    assert SECRET_KEY not in result.output
    assert not (tmp_path / "out").exists()


async def test_a_key_that_bypassed_the_settings_stays_out_of_the_log_in_any_spelling(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator()
    # model_copy skips validation, as a caller building Settings by hand might.
    settings = fast_settings(base_url=base, output_dir=tmp_path, max_retries=0).model_copy(
        update={"api_key": Secret(SECRET_KEY + "\r")}
    )
    with pytest.raises(ApiUnreachableError, match="LocalProtocolError"):
        await run_pipeline(settings)
    log = (tmp_path / "pipeline.log").read_text()
    assert "LocalProtocolError" in log  # h11 refused the header, quoting it as b'...\\r'
    assert SECRET_KEY not in log
