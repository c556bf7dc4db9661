"""Checkpoint and resume: kill -9, incomplete runs, signals, refused resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from customer_pipeline import CheckpointError, run_pipeline
from customer_pipeline.checkpoint import CHECKPOINT_FILE
from customer_pipeline.simulator import Dataset

from .conftest import SECRET_KEY, fast_settings
from .helpers import pages_api, simulator_process
from .reference import expected_customers

SIM_ARGS = ["--total", "3000", "--per-page", "6", "--latency-ms", "15", "--rate-limit", "0",
            "--failure-rate", "0.2", "--dirty-rate", "0.1", "--duplicate-rate", "0.05",
            "--truncate-rate", "0.01", "--drop-rate", "0.01"]  # fmt: skip


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """A simulator in its own process (so killing the pipeline does not kill it)."""
    with simulator_process(*SIM_ARGS) as url:
        yield url


def run_args(url: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "customer_pipeline", "run", "--base-url", url,
            "--output-dir", str(out), "--concurrency", "4", "--rate-limit", "0",
            "--backoff-base", "0.01", "--backoff-max", "0.05", "--max-retries", "12",
            "--no-progress", "--api-key", SECRET_KEY, *extra]  # fmt: skip


def customers(out: Path) -> list[dict[str, Any]]:
    return orjson.loads((out / "processed_customers.json").read_bytes())["customers"]  # type: ignore[no-any-return]


def wait_for_pages(out: Path, at_least: int, timeout: float = 30) -> None:
    """Until the checkpoint holds ``at_least`` pages (read from its own connection)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # read-only: never create the file before the run does
            db = sqlite3.connect(f"file:{out / CHECKPOINT_FILE}?mode=ro", uri=True)
            try:
                if db.execute("SELECT count(*) FROM units").fetchone()[0] >= at_least:
                    return
            finally:
                db.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"checkpoint never reached {at_least} pages")


def test_kill_9_then_resume_gives_the_uninterrupted_customers(
    simulator_url: str, tmp_path: Path
) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(run_args(simulator_url, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_pages(killed, 150)  # of 500: well under way
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "processed_customers.json").exists()

    refused = subprocess.run(run_args(simulator_url, killed), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run(run_args(simulator_url, killed, "--resume"), capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    report = orjson.loads((killed / "summary_report.json").read_bytes())
    assert report["run"]["resumed_pages"] >= 150
    assert report["api"]["pages_fetched"] <= 500 - 150 + 1  # only what was missing (+ page 1)
    assert not (killed / CHECKPOINT_FILE).exists()  # cleaned up once complete
    assert [p.name for p in killed.glob(".*.tmp")] == []  # the killed run's temp files too

    whole = tmp_path / "whole"
    subprocess.run(run_args(simulator_url, whole), check=True, capture_output=True, timeout=120)
    assert customers(killed) == customers(whole)
    assert customers(whole) == expected_customers(Dataset(3000, 42, 0.1, 0.05), 6, seed=42)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly_keeps_the_checkpoint_and_resume_finishes(
    simulator_url: str, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(run_args(simulator_url, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_pages(out, 40)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
        stopped_in = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert stopped_in < 5  # in-flight pages get a second; start-up and shutdown the rest
    assert "--resume" in err
    assert (out / CHECKPOINT_FILE).exists()
    assert not (out / "processed_customers.json").exists()
    resumed = subprocess.run(run_args(simulator_url, out, "--resume"), capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert customers(out) == expected_customers(Dataset(3000, 42, 0.1, 0.05), 6, seed=42)


async def test_incomplete_run_resumes_only_the_failed_pages(tmp_path: Path) -> None:
    failing = {3, 5}
    seen: list[int] = []
    settings = fast_settings(output_dir=tmp_path, max_retries=1)
    with pages_api(failing, seen):
        first = await run_pipeline(settings)
        assert first.exit_code == 3 and first.failed_pages == [3, 5]
        assert (tmp_path / CHECKPOINT_FILE).exists()  # kept for --resume
        failing.clear()  # the API recovers
        seen.clear()
        second = await run_pipeline(settings, mode="resume")
    assert second.complete and second.exit_code == 0
    assert sorted(seen) == [1, 3, 5]  # page 1 to learn the total, then just the missing ones
    assert [c["customer_id"] for c in customers(tmp_path)] == list(range(1, 49))
    assert not (tmp_path / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize(
    "change",
    [{"per_page": 7}, {"seed": 43}, {"base_url": "http://other.test"}, {"resource": "/v2/users"},
     {"first_page": 0}, {"data_path": "items"}, {"field": {"id": "uid"}},
     {"paginator": "offset"}, {"size_param": "limit"}, {"total_pages_path": "pages"}],
)  # fmt: skip
async def test_resume_with_settings_that_change_the_result_is_refused(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    with pages_api({4}, []):
        await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=0))
    name = next(iter(change))
    with pytest.raises(CheckpointError, match=f"{name} was"):
        await run_pipeline(fast_settings(output_dir=tmp_path, **change), mode="resume")


async def test_restart_discards_and_keep_checkpoint_keeps(tmp_path: Path) -> None:
    with pages_api({4}, []):
        await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=0))
    with pytest.raises(CheckpointError, match="unfinished run"), pages_api(set(), []):
        await run_pipeline(fast_settings(output_dir=tmp_path))
    with pages_api(set(), []):
        result = await run_pipeline(
            fast_settings(output_dir=tmp_path), mode="restart", keep_checkpoint=True
        )
    assert result.complete
    assert (tmp_path / CHECKPOINT_FILE).exists()


async def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    from customer_pipeline import FolderInUseError
    from customer_pipeline.writer import exclusive_folder

    with (
        exclusive_folder(tmp_path),
        pytest.raises(FolderInUseError, match="another"),
        pages_api(set(), []),
    ):
        await run_pipeline(fast_settings(output_dir=tmp_path))


def test_checkpoint_holds_no_key(simulator_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(run_args(simulator_url, out, "--keep-checkpoint"), check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.startswith(CHECKPOINT_FILE) for p in files)
    for path in files:
        assert SECRET_KEY.encode() not in path.read_bytes(), path
    assert os.path.getsize(out / "pipeline.log") > 0


# -- chains: a resumed walk goes on from the last committed cursor or URL --------------------

CURSOR_ENV = {"CUSTOMER_PIPELINE_PAGINATOR": "cursor",
              "CUSTOMER_PIPELINE_NEXT_PATH": "meta.next_cursor"}  # fmt: skip
CHAIN_SIM = ["--pagination", "cursor", "--total", "1200", "--per-page", "6", "--latency-ms",
             "5", "--rate-limit", "0", "--failure-rate", "0.2", "--dirty-rate", "0.1",
             "--duplicate-rate", "0.05", "--truncate-rate", "0.01"]  # fmt: skip


def test_kill_9_in_a_cursor_walk_then_resume_goes_on_from_the_last_committed_cursor(
    tmp_path: Path,
) -> None:
    env = {**os.environ, **CURSOR_ENV}
    killed = tmp_path / "killed"
    with simulator_process(*CHAIN_SIM) as url:
        proc = subprocess.Popen(run_args(url, killed), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        try:
            wait_for_pages(killed, 40)  # of 200
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        resumed = subprocess.run(run_args(url, killed, "--resume"), capture_output=True,
                                 text=True, timeout=120, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    report = orjson.loads((killed / "summary_report.json").read_bytes())
    replayed = report["run"]["resumed_pages"]
    assert replayed >= 40
    # Only what was missing: the chain went on from its last cursor, not from page 1.
    assert report["api"]["pages_fetched"] == 200 - replayed
    assert report["api"]["total_pages"] == 200
    assert customers(killed) == expected_customers(Dataset(1200, 42, 0.1, 0.05), 6, seed=42)


async def test_an_incomplete_cursor_walk_resumes_at_the_unit_that_failed(tmp_path: Path) -> None:
    import httpx
    import respx

    from .conftest import BASE_URL

    broken = {"c4"}
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor", "")
        seen.append(cursor)
        if cursor in broken:
            return httpx.Response(500)
        n = int(cursor[1:]) if cursor else 1
        users = [{"id": n * 10 + i, "email": f"u{n}{i}@x.io"} for i in range(3)]
        meta = {"next_cursor": f"c{n + 1}" if n < 6 else None}
        return httpx.Response(200, json={"data": users, "meta": meta})

    settings = fast_settings(output_dir=tmp_path, max_retries=1, paginator="cursor",
                             next_path="meta.next_cursor")  # fmt: skip
    with respx.mock:
        respx.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
        first = await run_pipeline(settings)
        assert first.exit_code == 3 and first.failed_pages == [4]
        assert "the walk stopped at page 4" in " ".join(first.incomplete_reasons)
        broken.clear()
        seen.clear()
        second = await run_pipeline(settings, mode="resume")
    assert second.complete and seen == ["c4", "c5", "c6"]
    assert [c["customer_id"] for c in customers(tmp_path)] == [
        n * 10 + i for n in range(1, 7) for i in range(3)]  # fmt: skip
    assert second.report["run"]["resumed_pages"] == 3
