"""What an independent tester found: each case fails the way it was reported without its fix."""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import re
import socket
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from customer_pipeline import ApiUnreachableError, CheckpointError, OutputError, run_pipeline
from customer_pipeline import checkpoint as checkpoint_module
from customer_pipeline import pipeline as pipeline_module
from customer_pipeline.checkpoint import CHECKPOINT_FILE
from customer_pipeline.cli import main
from customer_pipeline.dedup import SortedSpool
from customer_pipeline.http import Fetcher, FetchPolicy, Request, make_transport
from customer_pipeline.observe import Bus, Retrying
from customer_pipeline.settings import Settings

from .conftest import BASE_URL, SECRET_KEY, fast_settings
from .helpers import pages_api
from .hostile_server import Reply, hostile_server, listing, redirect
from .test_client import FakeTime

USERS = f"{BASE_URL}/api/users"

# 1. An output folder that cannot hold the checkpoint (a read-only mount).


def read_only_folder(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """Make creating the checkpoint fail as a read-only mount does (chmod stops no root)."""

    def refuse(path: Path) -> sqlite3.Connection:
        if failure == "oserror":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(checkpoint_module, "_connect", refuse)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        # Linux refuses even to unlink a missing file on a read-only mount (EROFS first).
        if path.name.startswith(CHECKPOINT_FILE):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)


@pytest.mark.parametrize("failure", ["oserror", "sqlite"])
def test_a_folder_that_cannot_hold_the_checkpoint_names_the_folder_and_the_fix(
    failure: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    read_only_folder(monkeypatch, failure)
    result = CliRunner().invoke(
        main,
        ["run", "--base-url", "http://127.0.0.1:9", "--api-key", SECRET_KEY, "--output-dir",
         str(out), "--log-file", str(tmp_path / "x.log"), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    error = result.output.splitlines()[-1]
    assert error.startswith(f"error: cannot create the checkpoint {out / CHECKPOINT_FILE}: ")
    assert "unexpected" not in error and "bug" not in error
    assert "--output-dir" in error and "writable" in error
    assert "--resume" not in error  # nothing was saved: there is nothing to resume


# 2. A checkpoint row no run could have written.


def add_unit(out: Path, number: int) -> None:
    """Add a unit numbered ``number`` to the checkpoint in ``out``, with page 1's body."""
    db = sqlite3.connect(out / CHECKPOINT_FILE)
    body = db.execute("SELECT body FROM units WHERE number = 1").fetchone()[0]
    db.execute("INSERT INTO units VALUES (?, NULL, NULL, ?)", (number, body))
    db.commit()
    db.close()


@pytest.mark.parametrize("number", [2**63 - 1, 10**10, -1])
async def test_a_checkpoint_unit_out_of_range_is_an_unreadable_checkpoint(
    number: int, tmp_path: Path
) -> None:
    settings = fast_settings(output_dir=tmp_path)
    with pages_api(set(), total_pages=3):
        await run_pipeline(settings, keep_checkpoint=True)
        add_unit(tmp_path, number)
        with pytest.raises(CheckpointError) as caught:
            await run_pipeline(settings, mode="resume")
    message = str(caught.value)
    assert message.startswith(f"checkpoint {tmp_path / CHECKPOINT_FILE} is unreadable: ")
    assert str(number) in message and message.endswith("; --restart discards it")


# 3. Nothing listening at the base URL.


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_refused_connection_is_mapped_at_the_seam(transport: str) -> None:
    port = closed_port()
    seam = make_transport(fast_settings(transport=transport))
    try:
        with pytest.raises(httpx.ConnectError) as caught:  # a transport error: retried
            await seam.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{port}/"))
    finally:
        await seam.aclose()
    assert str(caught.value) == f"connection refused by 127.0.0.1:{port}"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_refused_connection_is_retried_then_names_the_fix(
    transport: str, tmp_path: Path
) -> None:
    port = closed_port()
    settings = fast_settings(base_url=f"http://127.0.0.1:{port}", transport=transport,
                             max_retries=2, output_dir=tmp_path)  # fmt: skip
    with pytest.raises(ApiUnreachableError) as caught:
        await run_pipeline(settings)
    message = str(caught.value)
    assert message.startswith(
        f"page 1 failed after 3 attempts: connection refused by 127.0.0.1:{port}; "
        "is the API running at --base-url?"
    ), message


# 4. A full disk: what the message says depends on what the checkpoint kept.


def full_disk_for(monkeypatch: pytest.MonkeyPatch, fragment: str) -> None:
    """Make creating any temp or staged file whose name holds ``fragment`` fail: disk full."""
    real = tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if fragment in str(kwargs.get("prefix", "")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def one_dirty_page() -> respx.MockRouter:
    """Two pages of users; page 2 holds a record with no id (a reject)."""
    router = pages_api(set(), total_pages=2)
    router.routes[0].side_effect = None
    router.get(USERS).mock(
        side_effect=lambda request: httpx.Response(200, json={"total_pages": 2, "data": [
            {"id": int(request.url.params["page"]), "email": "a@x.io"}, {"email": "no-id@x.io"},
        ]}),
    )  # fmt: skip
    return router


@pytest.mark.parametrize("fragment", ["processed_customers", "summary_report", "rejected"])
async def test_a_full_disk_writing_the_outputs_says_the_checkpoint_is_kept_for_resume(
    fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(output_dir=tmp_path)
    with one_dirty_page():
        full_disk_for(monkeypatch, fragment)
        with pytest.raises(OutputError) as caught:
            await run_pipeline(settings)
        message = str(caught.value)
        assert "No space left on device; the checkpoint keeps the " in message
        assert message.endswith("free space, then run the same command with --resume to finish")
        assert caught.value.disk_full
        assert (tmp_path / CHECKPOINT_FILE).exists()  # what the message promises
        monkeypatch.undo()  # space is freed
        resumed = await run_pipeline(settings, mode="resume")
    assert resumed.complete and resumed.customers == 2 and resumed.report["run"]["resumed_pages"]


async def test_a_full_disk_spooling_customers_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spooled to scratch files in the output folder at once, as a big run is.
    monkeypatch.setattr(pipeline_module, "SortedSpool", functools.partial(SortedSpool, run_bytes=1))
    full_disk_for(monkeypatch, ".run.")
    with pages_api(set(), total_pages=2), pytest.raises(OutputError) as caught:
        await run_pipeline(fast_settings(output_dir=tmp_path))
    assert str(caught.value).startswith(f"cannot write a scratch file in {tmp_path}: No space")


def tiny_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint on a disk that holds its tables and little else (SQLite pages of 4 KB)."""
    real = checkpoint_module._connect
    monkeypatch.setattr(checkpoint_module, "_connect", lambda path: capped(real(path), 8))


def capped(db: sqlite3.Connection, pages: int) -> sqlite3.Connection:
    """``db``, unable to grow past ``pages`` pages."""
    db.execute(f"PRAGMA max_page_count = {pages}")
    return db


async def test_a_checkpoint_full_before_its_first_commit_does_not_promise_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_disk(monkeypatch)
    big = [{"id": i, "email": "x" * 200 + "@x.io"} for i in range(1, 400)]  # ~100 KB
    router = respx.mock(assert_all_called=False)
    router.get(USERS).mock(return_value=httpx.Response(200, json={"total_pages": 1, "data": big}))
    with router, pytest.raises(OutputError) as caught:
        await run_pipeline(fast_settings(output_dir=tmp_path))
    message = str(caught.value)
    assert message.startswith(f"cannot write the checkpoint {tmp_path / CHECKPOINT_FILE}: ")
    assert "database or disk is full" in message and "--resume" not in message
    assert message.endswith("no page was saved: free space, then run the same command again")
    assert not (tmp_path / CHECKPOINT_FILE).exists()


# 5. The wait a retry log line states is the wait that happens.


async def test_a_429_retry_logs_the_real_wait_and_what_the_server_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    bus = Bus()
    waits: list[float] = []
    bus.subscribe(Retrying, lambda event: waits.append(event.wait))
    router = respx.mock(assert_all_called=False)
    router.get(USERS).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "30"}),
                                        httpx.Response(200, content=b"ok")])  # fmt: skip
    policy = dataclasses.replace(FetchPolicy.from_settings(Settings()), rate_limit=0,
                                 backoff_base=0.001, backoff_max=1, timeout=5)  # fmt: skip
    caplog.set_level(logging.INFO, "customer_pipeline")
    with router:
        async with httpx.AsyncClient() as http:
            fetcher = Fetcher(http, policy, bus, api_key=SECRET_KEY, key_origin=BASE_URL,
                              sleep=fake.sleep, clock=fake.clock)  # fmt: skip
            await fetcher.fetch(Request(USERS, "page 1"), lambda response: response.body)
    slept = sum(seconds for _, seconds in fake.sleepers)
    assert slept == pytest.approx(1.0, abs=0.01)  # the pause, capped at --backoff-max
    assert waits == [pytest.approx(slept, abs=0.01)]
    line = next(r.getMessage() for r in caplog.records if "retry 1" in r.getMessage())
    assert line == "page 1: retry 1 in 1.00s after HTTP 429, Retry-After 30s (capped at " \
                   "--backoff-max 1s)"  # fmt: skip


# 6. A page that failed with an answer no retry fixes is not "failed after every retry".


def user(i: int) -> dict[str, Any]:
    return {"id": i, "email": f"u{i}@x.io", "first_name": "A", "last_name": "B",
            "avatar": f"https://x.io/{i}.png"}  # fmt: skip


async def test_a_redirect_on_a_later_page_has_its_own_reason(tmp_path: Path) -> None:
    pages = {n: listing([user(n)], total_pages=4) for n in (1, 2, 3, 4)}
    pages[2] = redirect("http://elsewhere.test/api/users?page=2")
    pages[3] = Reply(status=500)
    seen: list[int] = []
    async with hostile_server(pages, seen=seen) as url:
        result = await run_pipeline(fast_settings(base_url=url, output_dir=tmp_path, max_retries=2))
    assert seen.count(2) == 1 and seen.count(3) == 3  # the redirect was not retried
    assert result.failed_pages == [2, 3]
    assert result.not_retried_pages == [2]
    assert result.incomplete_reasons == [
        "pages [3] failed after every retry",
        "page 2 answered HTTP 302 (redirects are not followed), which no retry fixes",
    ]


# 7. --log-level DEBUG gives more detail: a line per request and per retry decision.


def flaky_pages() -> tuple[dict[int, Reply], Any]:
    """Page 2 answers 503 once, page 3 a redirect; the others a user each."""
    pages = {n: listing([user(n)], total_pages=3) for n in (1, 2, 3)}
    pages[3] = redirect("http://elsewhere.test/")
    told: list[int] = []

    def answer(page: int) -> Reply:
        if page == 2 and not told:
            told.append(page)
            return Reply(status=503)
        return pages.get(page, listing([]))

    return pages, answer


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
async def test_debug_logs_each_request_and_retry_decision_and_info_attaches_nothing(
    level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attached: list[str] = []
    real = pipeline_module.DebugLog

    class Spy(real):  # type: ignore[misc, valid-type]
        def attach(self, bus: Bus) -> Any:
            attached.append(level)
            return super().attach(bus)

    monkeypatch.setattr(pipeline_module, "DebugLog", Spy)
    _, answer = flaky_pages()
    async with hostile_server(answer) as url:
        await run_pipeline(fast_settings(base_url=url, output_dir=tmp_path, log_level=level))
    lines = (tmp_path / "pipeline.log").read_text().splitlines()
    debug = [line.split(": ", 1)[1] for line in lines if " DEBUG " in line]
    if level == "INFO":
        assert debug == [] and attached == []  # nothing subscribed: no cost
        return
    assert attached == ["DEBUG"]
    assert any(re.fullmatch(r"page 1: HTTP 200 in \d+\.\d{3}s, \d+ bytes", d) for d in debug)
    assert any(re.fullmatch(r"page 2: HTTP 503 in \d+\.\d{3}s, 0 bytes", d) for d in debug)
    assert any(re.fullmatch(r"page 2: HTTP 503 -> retry, attempt 2 of 6 in \d+\.\d\ds", d)
               for d in debug), debug  # fmt: skip
    assert "page 3: HTTP 302 -> not retried (no retry fixes it)" in debug, debug


async def test_a_reason_that_quotes_the_key_is_redacted_in_every_file(tmp_path: Path) -> None:
    # A server that echoes the key into a next URL on another origin: the walk stops there,
    # and the reason quotes that URL; no file may carry the key.
    from .hostile_server import json_page

    foreign = f"http://127.0.0.1:9/next?k={SECRET_KEY}"
    page = json_page({"data": [user(1)], "links": {"next": foreign}})
    async with hostile_server({0: page, 1: page}) as url:
        result = await run_pipeline(
            fast_settings(
                base_url=url, output_dir=tmp_path, paginator="next_url", next_path="links.next"
            )
        )
    assert not result.complete and any("***" in r for r in result.incomplete_reasons)
    # The checkpoint keeps the server's bodies as sent (for an exact resume), echo included.
    for name in ("processed_customers.json", "summary_report.json", "pipeline.log"):
        assert SECRET_KEY.encode() not in (tmp_path / name).read_bytes(), name
