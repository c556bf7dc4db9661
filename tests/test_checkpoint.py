"""The checkpoint itself: commits that do not wait for the next page, a full disk, corrupt
files, the run modes and what the messages promise."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import respx
from click.testing import CliRunner

from customer_pipeline import (
    CheckpointError,
    ConfigError,
    Interrupted,
    OutputError,
    Page,
    RunMode,
    run_pipeline,
)
from customer_pipeline import checkpoint as checkpoint_module
from customer_pipeline import pipeline as pipeline_module
from customer_pipeline.checkpoint import CHECKPOINT_FILE, Checkpoint
from customer_pipeline.cli import main
from customer_pipeline.console import print_summary

from .conftest import BASE_URL, SECRET_KEY, fast_settings
from .helpers import pages_api, simulator_process
from .test_resume import run_args, wait_for_pages

USERS = f"{BASE_URL}/api/users"


def listing(page: int, total_pages: int) -> bytes:
    users = [
        {"id": i, "email": f"u{i}@x.io", "first_name": "A", "last_name": "B", "avatar": "a.png"}
        for i in range(page * 6 - 5, page * 6 + 1)
    ]
    return orjson.dumps({"total_pages": total_pages, "data": users})


def committed_pages(out: Path) -> list[int]:
    """Page numbers another process would see: read-only, so never the writer's transaction."""
    db = sqlite3.connect(f"file:{out / CHECKPOINT_FILE}?mode=ro", uri=True)
    try:
        return [n for (n,) in db.execute("SELECT number FROM units ORDER BY number")]
    finally:
        db.close()


def api_that_waits(before: Callable[[int], Awaitable[None]]) -> respx.MockRouter:
    """Two pages, each answered once ``before(page)`` returns (a slow or stalled page)."""

    async def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        await before(page)
        return httpx.Response(200, content=listing(page, 2))

    router = respx.mock(assert_all_called=False)
    router.get(USERS).mock(side_effect=answer)
    return router


# 1. Commits do not wait for the next page.


async def test_a_page_is_committed_while_the_next_one_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that recording page 1 right after opening never commits by itself.
    monkeypatch.setattr(checkpoint_module, "COMMIT_EVERY_S", 0.2)
    release = asyncio.Event()

    async def slow_page_2(page: int) -> None:
        if page == 2:
            await release.wait()  # nothing else arrives meanwhile

    settings = fast_settings(output_dir=tmp_path, timeout=30)
    seen: list[int] = []
    with api_that_waits(slow_page_2):
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, settings)
            with anyio.move_on_after(5):  # a bounded wait: 0.2 s when it works
                while not seen:
                    await anyio.sleep(0.01)
                    if (tmp_path / CHECKPOINT_FILE).exists():
                        seen = committed_pages(tmp_path)
            release.set()
    assert seen == [1]


class StallingApi:
    """A raw loopback HTTP server in a thread of its own (so a subprocess can use it): the
    pages in ``serves`` (of 2) answer at once, every other request is held until it stops."""

    def __init__(self, serves: set[int]) -> None:
        self.serves = serves
        self.url = ""
        self.requested = threading.Event()
        self._up = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    def __enter__(self) -> StallingApi:
        self._thread.start()
        assert self._up.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requested.set()
                page = int(head.split(b"page=", 1)[1].split(b"&", 1)[0].split(b" ", 1)[0])
                if page not in self.serves:
                    await self._stop.wait()
                    return
                body = listing(page, 2)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._up.set()
        async with server:
            await self._stop.wait()


def test_kill_9_during_a_stall_keeps_the_page_that_arrived(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with StallingApi(serves={1}) as api:
        args = [*run_args(api.url, out), "--timeout", "60"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_pages(out, 1, timeout=10)  # page 2 never comes: only a timer commits 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert committed_pages(out) == [1]
    assert not (out / "processed_customers.json").exists()


# 2. A full disk.

FULL_DISK = """
import sys
from customer_pipeline import checkpoint
real = checkpoint._connect
def tiny(path):
    db = real(path)
    db.execute("PRAGMA max_page_count = 8")  # a disk that fills after a few pages
    return db
checkpoint._connect = tiny
from customer_pipeline.cli import main
main()
"""


def test_a_full_disk_while_checkpointing_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with simulator_process("--total", "600", "--per-page", "60", "--failure-rate", "0",
                           "--rate-limit", "0", "--latency-ms", "0") as url:  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", FULL_DISK, "run", "--base-url", url, "--output-dir", str(out),
             "--per-page", "60", "--rate-limit", "0", "--no-progress", "--api-key", SECRET_KEY],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error: cannot write the checkpoint" in proc.stderr
    assert "database or disk is full; " in proc.stderr
    # Whether the first group of pages was committed before the disk filled depends on timing;
    # the message must say what is true: --resume only when the checkpoint was kept.
    if (out / CHECKPOINT_FILE).exists():
        assert "free space, then run the same command with --resume" in proc.stderr
    else:
        assert "no page was saved: free space, then run the same command again" in proc.stderr
    assert not (out / "processed_customers.json").exists()


async def test_a_failed_write_keeps_what_was_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = checkpoint_module._connect

    def tiny(path: Path) -> sqlite3.Connection:
        db = real(path)
        db.execute("PRAGMA max_page_count = 8")
        return db

    monkeypatch.setattr(checkpoint_module, "_connect", tiny)
    checkpoint = Checkpoint.open(fast_settings(output_dir=tmp_path))
    checkpoint.record(Page(1, [], 2, listing(1, 2)))
    checkpoint.commit()
    with pytest.raises(OutputError, match="database or disk is full") as caught:
        for number in range(2, 100):
            checkpoint.record(Page(number, [], 100, b"x" * 3000))
        checkpoint.commit()
    checkpoint.close()
    assert caught.value.disk_full  # the run says "free space" (and --resume, as pages are kept)
    assert committed_pages(tmp_path) == [1]


async def test_a_commit_failing_on_the_timer_ends_the_run_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FailingCommits(sqlite3.Connection):
        commits = 0

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "COMMIT":
                FailingCommits.commits += 1
                if FailingCommits.commits > 1:  # the one that creates the checkpoint succeeds
                    raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

    def failing(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, factory=FailingCommits)

    monkeypatch.setattr(checkpoint_module, "_connect", failing)

    async def stalled_page_2(page: int) -> None:
        if page == 2:
            await asyncio.Event().wait()  # only the timer can commit page 1

    with (
        api_that_waits(stalled_page_2),
        anyio.fail_after(5),
        pytest.raises(OutputError, match=r"disk I/O error; no page was saved: fix that, then run "
                      "the same command again$"),
    ):
        await run_pipeline(fast_settings(output_dir=tmp_path, timeout=30))
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # nothing was committed: nothing to keep


# 3. Corrupt checkpoints.


def corrupt_fingerprint(value: str) -> Callable[[Path], None]:
    def spoil(path: Path) -> None:
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (value,))
        db.commit()
        db.close()

    return spoil


def other_units_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("DROP TABLE units")
    db.execute("CREATE TABLE units (n INTEGER, payload TEXT)")
    db.commit()
    db.close()


def not_sqlite(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database, just some text\n" * 50)


def a_folder(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()
    (path / "something").write_text("x")


@pytest.fixture(scope="module")
def quick_api() -> Iterator[str]:
    with simulator_process("--total", "24", "--failure-rate", "0", "--rate-limit", "0",
                           "--latency-ms", "0") as url:  # fmt: skip
        yield url


def cli_run(url: str, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["run", "--base-url", url, "--output-dir", str(out),
                                     "--rate-limit", "0", "--no-progress", "--api-key",
                                     SECRET_KEY, *extra])  # fmt: skip


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (corrupt_fingerprint("{not json"), "not JSON"),
        (corrupt_fingerprint("[1, 2]"), "not a JSON object"),
        (other_units_schema, "units table"),
        (not_sqlite, "not a database"),
        (a_folder, "folder"),
    ],
)
def test_a_corrupt_checkpoint_is_refused_and_restart_discards_it(
    quick_api: str, tmp_path: Path, spoil: Callable[[Path], None], why: str
) -> None:
    out = tmp_path / "out"
    assert cli_run(quick_api, out, "--keep-checkpoint").exit_code == 0
    spoil(out / CHECKPOINT_FILE)
    for extra in ((), ("--resume",)):
        refused = cli_run(quick_api, out, *extra)
        assert refused.exit_code == 2, refused.output
        assert f"error: checkpoint {out / CHECKPOINT_FILE} is unreadable: " in refused.output
        assert why in refused.output and "--restart discards it" in refused.output
        assert "Traceback" not in refused.output
    restarted = cli_run(quick_api, out, "--restart")
    assert restarted.exit_code == 0, restarted.output
    assert not (out / CHECKPOINT_FILE).exists()


async def test_a_corrupt_page_found_while_resuming_names_restart(tmp_path: Path) -> None:
    with pages_api({4}, []):
        first = await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=0))
    assert first.exit_code == 3
    db = sqlite3.connect(tmp_path / CHECKPOINT_FILE)
    db.execute("UPDATE units SET body = ? WHERE number = 3", (b'{"data": [{"id": 1',))
    db.commit()
    db.close()
    with (
        pages_api(set(), []),
        pytest.raises(CheckpointError, match=r"unreadable: stored page 3 .*--restart discards"),
    ):
        await run_pipeline(fast_settings(output_dir=tmp_path), mode="resume")
    assert (tmp_path / CHECKPOINT_FILE).exists()  # kept for a look, or for --restart


# 4. Run modes.


async def test_a_kept_complete_checkpoint_does_not_block_the_next_run(tmp_path: Path) -> None:
    settings = fast_settings(output_dir=tmp_path)
    with pages_api(set(), []):
        kept = await run_pipeline(settings, keep_checkpoint=True)
        assert kept.complete and (tmp_path / CHECKPOINT_FILE).exists()
        again = await run_pipeline(settings)
    assert again.complete
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # the finished one was discarded


async def test_resuming_a_complete_checkpoint_replays_it_with_no_requests(
    tmp_path: Path,
) -> None:
    settings = fast_settings(output_dir=tmp_path)
    with pages_api(set(), []):
        first = await run_pipeline(settings, keep_checkpoint=True)
    exported = first.customers_path.read_bytes()
    seen: list[int] = []
    with pages_api(set(), seen):
        replayed = await run_pipeline(settings, mode="resume", keep_checkpoint=True)
    assert seen == []
    assert replayed.complete and replayed.report["api"]["requests"] == 0
    assert replayed.report["api"]["total_pages"] == 8
    assert (
        orjson.loads(replayed.customers_path.read_bytes())["customers"]
        == (orjson.loads(exported)["customers"])
    )
    assert (tmp_path / CHECKPOINT_FILE).exists()


async def test_contradictory_or_unknown_modes_are_refused(tmp_path: Path) -> None:
    settings = fast_settings(output_dir=tmp_path / "out")
    with pytest.raises(TypeError, match="unexpected keyword argument 'resume'"):
        await run_pipeline(settings, resume=True, restart=True)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="mode must be one of new, resume, restart"):
        await run_pipeline(settings, mode="again")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()  # refused before anything was done


@pytest.mark.parametrize("mode", ["new", "resume"])
async def test_an_empty_checkpoint_left_by_a_kill_at_start_is_no_obstacle(
    tmp_path: Path, mode: RunMode
) -> None:
    (tmp_path / CHECKPOINT_FILE).touch()  # to SQLite, a database with no table yet
    with pages_api(set(), []):
        result = await run_pipeline(fast_settings(output_dir=tmp_path), mode=mode)
    assert result.complete


# 5. Messages.


async def test_stopped_before_any_page_says_nothing_was_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "STOP_GRACE_S", 0.01)
    stop = asyncio.Event()

    async def stopped_during_page_1(page: int) -> None:
        stop.set()  # SIGTERM while page 1 waits out its Retry-After
        await asyncio.Event().wait()

    with api_that_waits(stopped_during_page_1), pytest.raises(Interrupted) as raised:
        await run_pipeline(fast_settings(output_dir=tmp_path), stop=stop)
    message = str(raised.value)
    assert "no page was saved" in message and "--resume" not in message
    assert CHECKPOINT_FILE not in message
    assert not (tmp_path / CHECKPOINT_FILE).exists()


async def test_the_summary_of_an_incomplete_run_says_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pages_api({3}, []):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=0))
    print_summary(result)
    out = capsys.readouterr().out
    assert "run the same command with --resume to fetch only the failed pages" in out
    assert "Run again later" not in out


@pytest.mark.parametrize("signals", [1, 2])
def test_a_signal_before_any_page_says_to_run_again_not_to_resume(
    tmp_path: Path, signals: int
) -> None:
    out = tmp_path / "out"
    with StallingApi(serves=set()) as api:
        args = [*run_args(api.url, out), "--timeout", "60"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert api.requested.wait(10)  # page 1 is in flight
            for _ in range(signals):
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    assert "no page was saved" in err and "run the same command again" in err
    assert "--resume" not in err and "Traceback" not in err
    assert not (out / CHECKPOINT_FILE).exists()


# 6. Units (schema 2).


async def test_a_link_chain_resumes_from_the_link_header_recorded_with_its_last_unit(
    tmp_path: Path,
) -> None:
    broken = {3}
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["p"]) if "p" in request.url.params else 1
        seen.append(page)
        if page in broken:
            return httpx.Response(503)
        link = {"Link": f'</api/users?p={page + 1}>; rel="next"'} if page < 5 else {}
        users = orjson.loads(listing(page, 0))["data"]
        return httpx.Response(200, json=users, headers=link)

    settings = fast_settings(output_dir=tmp_path, paginator="link", data_path="", max_retries=0)
    with respx.mock:
        respx.get(USERS).mock(side_effect=answer)
        first = await run_pipeline(settings)
        assert first.exit_code == 3 and first.failed_pages == [3]
        db = sqlite3.connect(tmp_path / CHECKPOINT_FILE)
        rows = db.execute("SELECT number, state, headers FROM units ORDER BY number").fetchall()
        db.close()
        assert rows == [
            (1, None, '{"link":"</api/users?p=2>; rel=\\"next\\""}'),
            (2, f"{USERS}?p=2", '{"link":"</api/users?p=3>; rel=\\"next\\""}'),
        ]
        broken.clear()
        seen.clear()
        second = await run_pipeline(settings, mode="resume")
    assert second.complete and seen == [1, 3, 4, 5]  # page 1 says it is a chain; then on
    exported = orjson.loads(second.customers_path.read_bytes())["customers"]
    assert [c["customer_id"] for c in exported] == list(range(1, 31))


def test_a_checkpoint_of_the_schema_before_units_is_refused_with_restart(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE pages (number INTEGER PRIMARY KEY, body BLOB)")
    db.execute("""INSERT INTO meta VALUES ('fingerprint', '{"schema": 1}')""")
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match=r"unreadable: it has no units table.*--restart"):
        Checkpoint.open(fast_settings(output_dir=tmp_path), "resume")


# 7. Record, commit, replay: the Checkpoint on its own.


def reread_as_recorded(
    number: int, state: str | None, headers: dict[str, str] | None, body: bytes
) -> Page:
    """A reread that keeps everything the checkpoint hands back, to compare."""
    return Page(number, orjson.loads(body)["data"], None, body, state, headers)


def unit_checkpoint(out: Path, commit_every_s: float = 3600) -> Checkpoint:
    checkpoint = Checkpoint.open(fast_settings(output_dir=out))
    checkpoint.commit_every_s = commit_every_s
    return checkpoint


def test_replay_gives_back_each_unit_by_number_with_its_state_headers_and_body(
    tmp_path: Path,
) -> None:
    checkpoint = unit_checkpoint(tmp_path)
    third = Page(3, [], None, listing(3, 0), "cursor-3", {"link": '<x>; rel="next"'})
    first = Page(1, [], None, listing(1, 0))
    checkpoint.record(third)
    checkpoint.record(first)
    checkpoint.record(Page(2, [], None, b'{"data": []}', "stale"))
    checkpoint.record(Page(2, [], None, listing(2, 0), "cursor-2"))  # the same unit again
    assert len(checkpoint) == 3
    replayed = [(p.number, p.state, p.headers, p.body)
                for p in checkpoint.replay(reread_as_recorded)]  # fmt: skip
    assert replayed == [
        (1, None, None, listing(1, 0)),
        (2, "cursor-2", None, listing(2, 0)),
        (3, "cursor-3", {"link": '<x>; rel="next"'}, listing(3, 0)),
    ]
    checkpoint.close()


def test_a_recorded_unit_is_durable_only_once_committed(tmp_path: Path) -> None:
    checkpoint = unit_checkpoint(tmp_path)
    checkpoint.record(Page(1, [], None, listing(1, 2)))
    checkpoint.record(Page(2, [], None, listing(2, 2)))
    assert committed_pages(tmp_path) == []  # another process sees nothing yet
    checkpoint.commit()
    assert committed_pages(tmp_path) == [1, 2]
    checkpoint.close()


def test_without_a_committer_record_commits_once_commit_every_s_has_passed(
    tmp_path: Path,
) -> None:
    checkpoint = unit_checkpoint(tmp_path, commit_every_s=0)
    checkpoint.record(Page(1, [], None, listing(1, 2)))
    assert committed_pages(tmp_path) == [1]
    checkpoint.close()


async def test_the_committer_commits_a_recorded_unit_without_waiting_for_the_next(
    tmp_path: Path,
) -> None:
    checkpoint = unit_checkpoint(tmp_path, commit_every_s=0.001)
    with anyio.fail_after(5):
        async with checkpoint.committing():
            checkpoint.record(Page(1, [], None, listing(1, 2)))
            for _ in range(5000):  # the timer's commit, polled from another connection
                if committed_pages(tmp_path) == [1]:
                    break
                await anyio.sleep(0.001)
            assert committed_pages(tmp_path) == [1]
            checkpoint.commit_every_s = 3600  # from here on only the way out commits
            checkpoint.record(Page(2, [], None, listing(2, 2)))
            await anyio.sleep(0.01)
            assert committed_pages(tmp_path) == [1]
    assert committed_pages(tmp_path) == [1, 2]
    checkpoint.close()


def test_a_complete_checkpoint_reopens_complete_with_its_total(tmp_path: Path) -> None:
    checkpoint = unit_checkpoint(tmp_path)
    checkpoint.record(Page(1, [], None, listing(1, 1)))
    checkpoint.mark_complete(1)
    checkpoint.close()
    again = Checkpoint.open(fast_settings(output_dir=tmp_path), "resume")
    assert again.resumed and again.complete and again.total_pages == 1 and len(again) == 1
    assert [p.number for p in again.replay(reread_as_recorded)] == [1]
    again.close()


def test_an_unfinished_checkpoint_reopens_unfinished_and_blocks_a_new_run(tmp_path: Path) -> None:
    checkpoint = unit_checkpoint(tmp_path)
    checkpoint.record(Page(1, [], None, listing(1, 4)))
    checkpoint.close()  # commits what was recorded
    again = Checkpoint.open(fast_settings(output_dir=tmp_path), "resume")
    assert again.resumed and not again.complete and again.total_pages is None
    assert len(again) == 1
    again.close()
    with pytest.raises(CheckpointError, match="holds an unfinished run: pass --resume"):
        Checkpoint.open(fast_settings(output_dir=tmp_path))


def test_a_stored_unit_with_malformed_headers_is_unreadable(tmp_path: Path) -> None:
    checkpoint = unit_checkpoint(tmp_path)
    checkpoint.record(Page(1, [], None, listing(1, 1), None, {"link": "x"}))
    checkpoint.commit()
    db = sqlite3.connect(tmp_path / CHECKPOINT_FILE)
    db.execute("""UPDATE units SET headers = '{"link": 5}'""")
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="stored page 1 has malformed headers; --restart"):
        list(checkpoint.replay(reread_as_recorded))
    checkpoint.close()
