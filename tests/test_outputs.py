"""The output folder: one run's files at a time, no lock file, the seed's band keys."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import respx
from pydantic import ValidationError

from customer_pipeline import FolderInUseError, Interrupted, OutputError, run_pipeline
from customer_pipeline.console import print_summary
from customer_pipeline.models import ExportDocument, QualitySummary
from customer_pipeline.sinks import output_files
from customer_pipeline.writer import exclusive_folder

from .conftest import BASE_URL, fast_settings

OUTPUTS = ("processed_customers.json", "rejected_records.jsonl", "summary_report.json")
SEED_BANDS = ["high_quality", "medium_quality", "low_quality"]


def api(state: dict[str, Any]) -> respx.MockRouter:
    """Two pages of 3 users; while state['dirty'], page 2 adds user 7 and a record with no id."""
    router = respx.mock(assert_all_called=False)

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        users: list[Any] = [
            {"id": i, "email": f"u{i}@x.io", "first_name": "A", "last_name": "B",
             "avatar": "https://x.io/a.png"}
            for i in range(page * 3 - 2, page * 3 + 1)
        ]  # fmt: skip
        users[0].update(avatar=None, email=None)  # one medium-quality customer a page (80)
        users[1].update(avatar=None, email=None, first_name=" ", last_name=None)  # one low (60)
        if page == 2 and state["dirty"]:
            users += [{"id": 7, "email": "u7@x.io"}, {"email": "no-id@x.io"}]
        return httpx.Response(200, json={"total_pages": 2, "data": users})

    router.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
    return router


def snapshot(folder: Path) -> dict[str, bytes]:
    """The run-owned output files in ``folder`` and their bytes."""
    return {name: (folder / name).read_bytes() for name in OUTPUTS if (folder / name).exists()}


def leftovers(folder: Path) -> list[str]:
    """Temp and staged files in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".staged"))]


def failing_replace(monkeypatch: pytest.MonkeyPatch, when: Callable[[Path], bool]) -> None:
    """Make every rename onto a path that matches ``when`` fail as a full disk would."""
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if when(Path(dst)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


async def test_a_run_without_rejects_removes_the_rejects_file_of_the_run_before(
    tmp_path: Path,
) -> None:
    state = {"dirty": True}
    with api(state):
        first = await run_pipeline(fast_settings(output_dir=tmp_path))
        assert first.rejected == 1 and (tmp_path / "rejected_records.jsonl").exists()
        state["dirty"] = False
        second = await run_pipeline(fast_settings(output_dir=tmp_path))
    assert second.rejected == 0 and second.rejected_path is None
    assert orjson.loads(second.report_path.read_bytes())["counts"]["rejected"] == 0
    assert sorted(snapshot(tmp_path)) == ["processed_customers.json", "summary_report.json"]


async def test_a_run_that_fails_writing_its_report_leaves_the_last_good_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"dirty": True}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path))
        before = snapshot(tmp_path)
        state["dirty"] = False  # the next run would publish other files
        failing_replace(monkeypatch, lambda path: "summary_report" in path.name)
        with pytest.raises(OutputError, match="No space left"):
            await run_pipeline(fast_settings(output_dir=tmp_path))
    assert snapshot(tmp_path) == before  # all three, byte for byte: no mix of two runs
    assert leftovers(tmp_path) == []
    assert (tmp_path / ".checkpoint.sqlite3").exists()  # so --resume finishes, no refetching


async def test_a_failure_between_the_renames_leaves_no_mixed_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"dirty": False}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path))
        state["dirty"] = True
        # The last rename of the set fails: the customers and rejects are already in place.
        failing_replace(monkeypatch, lambda path: path.name == "summary_report.json")
        with pytest.raises(OutputError, match=r"summary_report\.json.*not left mixed.*--resume"):
            await run_pipeline(fast_settings(output_dir=tmp_path))
        assert snapshot(tmp_path) == {}  # neither run's set, rather than half of each
        assert leftovers(tmp_path) == []
        monkeypatch.undo()  # the disk has room again: --resume publishes the whole set
        resumed = await run_pipeline(fast_settings(output_dir=tmp_path), mode="resume")
    assert resumed.rejected == 1 and sorted(snapshot(tmp_path)) == sorted(OUTPUTS)


async def test_an_interrupted_run_leaves_the_last_outputs_as_they_were(tmp_path: Path) -> None:
    state = {"dirty": True}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path))
        before = snapshot(tmp_path)
        state["dirty"] = False
        stop = anyio.Event()
        stop.set()
        with pytest.raises(Interrupted):
            await run_pipeline(fast_settings(output_dir=tmp_path), stop=stop)
    assert snapshot(tmp_path) == before


async def test_a_run_leaves_no_lock_file(tmp_path: Path) -> None:
    with api({"dirty": False}):
        await run_pipeline(fast_settings(output_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pipeline.log", "processed_customers.json", "summary_report.json",
    ]  # fmt: skip


def test_the_folder_lock_creates_no_file_and_refuses_a_second_holder(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    with exclusive_folder(folder):
        assert list(folder.iterdir()) == []
        with pytest.raises(FolderInUseError, match="another"), exclusive_folder(folder):
            pass
    with exclusive_folder(folder):  # released when the run ends
        pass
    assert list(folder.iterdir()) == []


def test_a_lock_file_of_an_earlier_version_is_removed_unless_held(tmp_path: Path) -> None:
    legacy = tmp_path / ".lock"
    legacy.touch()
    with open(legacy, "rb") as held:  # an earlier version's run, still going
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FolderInUseError, match="another"), exclusive_folder(tmp_path):
            pass
    with exclusive_folder(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_where_a_folder_cannot_be_locked_a_lock_file_is_used_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fcntl.flock

    def nfs_flock(fd: int, operation: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):  # as NFS: a POSIX lock needs a writable file
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    with exclusive_folder(tmp_path):
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]
        with pytest.raises(FolderInUseError, match="another"), exclusive_folder(tmp_path):
            pass
    with exclusive_folder(tmp_path):  # released when the run ends; kept, as unlinking races
        pass
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_files_a_killed_run_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    left = [
        ".processed_customers.json.k2j3h4.tmp",  # a temp file mid-write
        ".summary_report.json.staged",  # written whole, not yet published
        "..rejected_records.jsonl.staged.x8d7.tmp",  # the temp file of a staged file
    ]
    kept = [".gitkeep", ".checkpoint.sqlite3", "processed_customers.json", "notes.tmp"]
    for name in left + kept:
        (tmp_path / name).touch()
    with exclusive_folder(tmp_path, output_files()):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


async def test_bands_use_the_seed_keys_in_export_report_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with api({"dirty": False}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path))
    doc = orjson.loads(result.customers_path.read_bytes())
    ExportDocument.model_validate(doc)
    expected = {"high_quality": 2, "medium_quality": 2, "low_quality": 2}
    assert doc["metadata"]["data_quality_summary"] == expected
    assert list(doc["metadata"]["data_quality_summary"]) == SEED_BANDS  # the seed's order
    assert orjson.loads(result.report_path.read_bytes())["quality"]["bands"] == expected
    print_summary(result)
    assert "(quality high 2, medium 2, low 2)" in capsys.readouterr().out


def test_the_schema_names_the_seed_band_keys_and_refuses_the_old_ones() -> None:
    schema = QualitySummary.model_json_schema()
    assert sorted(schema["required"]) == sorted(SEED_BANDS)
    assert schema["additionalProperties"] is False
    with pytest.raises(ValidationError):
        QualitySummary.model_validate({"high": 12, "medium": 0, "low": 0})
