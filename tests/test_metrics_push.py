"""Pushing to a Pushgateway: one deadline, no redirect, the whole group, after the checkpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anyio
import pytest

from customer_pipeline import run_pipeline
from customer_pipeline.checkpoint import CHECKPOINT_FILE

from .conftest import fast_settings
from .helpers import http_server, pages_api

P = "customer_pipeline_"
# How long the slow gateway dribbles before it gives up: a push that waits for it fails.
DRIBBLE_S = 3.0


class _Gateway(BaseHTTPRequestHandler):
    """A Pushgateway stand-in: remembers each request, answers GET /metrics with ``held``."""

    requests: list[dict[str, Any]]
    held: str
    redirect_to: str | None
    checkpoint: Path | None
    echo_auth: bool = False

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.requests.append({
            "method": self.command, "path": self.path, "body": body.decode(),
            "auth": self.headers.get("authorization"),
            "checkpoint": self.checkpoint is not None and self.checkpoint.exists(),
        })  # fmt: skip
        if self.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", f"{self.redirect_to}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.echo_auth:  # a broken proxy: the header it got, as its reason phrase
            self.send_response(500, self.headers.get("authorization"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        text = self.held.encode() if self.command == "GET" else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def gateway(
    held: str = "",
    redirect_to: str | None = None,
    checkpoint: Path | None = None,
    echo_auth: bool = False,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in gateway on a free loopback port: its URL and the requests it got."""
    requests: list[dict[str, Any]] = []
    attributes = {"requests": requests, "held": held, "redirect_to": redirect_to,
                  "checkpoint": checkpoint, "echo_auth": echo_auth}  # fmt: skip
    with http_server(type("Handler", (_Gateway,), attributes), poll_s=0.01) as port:
        yield f"http://127.0.0.1:{port}", requests


@contextlib.contextmanager
def dribbling_gateway() -> Iterator[tuple[str, threading.Event]]:
    """A gateway that answers one byte at a time (50 ms apart) for DRIBBLE_S; set on a request."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    asked, done = threading.Event(), threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                asked.set()
                end = time.monotonic() + DRIBBLE_S
                with contextlib.suppress(OSError):
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
                        if done.wait(0.05) or time.monotonic() > end:
                            break
                        conn.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", asked
    finally:
        done.set()
        thread.join()
        listener.close()


def passing(router: Any) -> Any:
    """``router`` letting loopback requests (the gateway) through."""
    router.route(host="127.0.0.1").pass_through()
    return router


async def test_a_push_replaces_the_group_and_an_incomplete_run_carries_the_success_over(
    tmp_path: Path,
) -> None:
    held = (
        f"# TYPE {P}last_success_timestamp_seconds gauge\n"
        f'{P}last_success_timestamp_seconds{{instance="other",job="customer_pipeline"}} 999\n'
        f'{P}last_success_timestamp_seconds{{instance="nightly-1",job="customer_pipeline"}} 1234\n'
    )
    with gateway(held) as (url, requests):
        settings = fast_settings(output_dir=tmp_path, pushgateway=url, metrics_instance="nightly-1")
        with passing(pages_api(set())):
            await run_pipeline(settings)
        with passing(pages_api({2})):
            await run_pipeline(settings.model_copy(update={"max_retries": 0}), mode="restart")
    complete, read, incomplete = requests
    assert complete["method"] == incomplete["method"] == "PUT"
    assert read["method"] == "GET" and read["path"] == "/metrics"
    assert f"{P}last_success_timestamp_seconds 1234.0" in incomplete["body"]
    assert f"{P}run_complete 0.0" in incomplete["body"]
    assert f"{P}last_success_timestamp_seconds 1234.0" not in complete["body"]


async def test_a_redirect_is_a_failed_push_and_is_never_followed(tmp_path: Path) -> None:
    with gateway() as (elsewhere, stolen), gateway(redirect_to=elsewhere) as (url, asked):
        settings = fast_settings(output_dir=tmp_path, pushgateway=url.replace("//", "//u:pw-1@"))
        with passing(pages_api(set())):
            await run_pipeline(settings)
        with passing(pages_api({2})):
            await run_pipeline(settings.model_copy(update={"max_retries": 0}), mode="restart")
    assert stolen == [] and len(asked) == 2
    log = (tmp_path / "pipeline.log").read_text()
    assert log.count("cannot push the metrics") == 2 and "302" in log and "redirect" in log
    assert "metrics pushed" not in log


async def test_the_checkpoint_is_deleted_before_the_push(tmp_path: Path) -> None:
    checkpoint = tmp_path / CHECKPOINT_FILE
    with gateway(checkpoint=checkpoint) as (url, requests), passing(pages_api(set())):
        await run_pipeline(fast_settings(output_dir=tmp_path, pushgateway=url))
    [push] = requests
    assert push["checkpoint"] is False


async def test_a_gateway_that_dribbles_is_given_up_on_after_the_timeout(tmp_path: Path) -> None:
    with dribbling_gateway() as (url, _), passing(pages_api(set())):
        started = time.monotonic()
        result = await run_pipeline(fast_settings(output_dir=tmp_path, pushgateway=url,
                                                  timeout=0.3))  # fmt: skip
        took = time.monotonic() - started
    assert result.exit_code == 0
    assert took < DRIBBLE_S / 2
    log = (tmp_path / "pipeline.log").read_text()
    assert "cannot push the metrics" in log and "within 0.3 s" in log


async def test_a_run_waiting_on_a_slow_gateway_can_still_be_cancelled(tmp_path: Path) -> None:
    with dribbling_gateway() as (url, asked), passing(pages_api(set())):
        run = asyncio.create_task(run_pipeline(fast_settings(output_dir=tmp_path,
                                                             pushgateway=url)))  # fmt: skip
        assert await anyio.to_thread.run_sync(asked.wait, 10.0)
        started = time.monotonic()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        took = time.monotonic() - started
    assert took < DRIBBLE_S / 2
    assert not (tmp_path / CHECKPOINT_FILE).exists()


async def test_basic_auth_echoed_in_the_reason_phrase_stays_out_of_the_warning(
    tmp_path: Path,
) -> None:
    with gateway(echo_auth=True) as (url, requests), passing(pages_api(set())):
        url = url.replace("//", "//pusher:s3cret-pw@")
        await run_pipeline(fast_settings(output_dir=tmp_path, pushgateway=url))
    token = base64.b64encode(b"pusher:s3cret-pw").decode()
    assert requests[0]["auth"] == f"Basic {token}"
    log = (tmp_path / "pipeline.log").read_text()
    assert "cannot push the metrics" in log and "500" in log and token not in log
