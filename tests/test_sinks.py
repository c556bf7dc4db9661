"""The sink port: the batch type, the registry, the JSON document and the commit rule.

The commit rule (customer_pipeline/sinks/base.py): file sinks stage first, then databases
commit their transactions one by one, then the folder's set is renamed into place. A failure
aborts every sink not yet committed and the folder keeps the last run's set; a database that
already committed keeps this run's customers, and the error names it.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import respx

from customer_pipeline import ConfigError, OutputError, pipeline, run_pipeline, sinks
from customer_pipeline.sinks import CustomerBatch, RunMetadata, SinkContext, batches
from customer_pipeline.writer import RunOutputs, exclusive_folder

from .conftest import BASE_URL, fast_settings

GOLDEN = Path(__file__).parent / "golden"
OUTPUTS = ("processed_customers.json", "rejected_records.jsonl", "summary_report.json")


def masked(document: bytes) -> bytes:
    """The export with what changes from run to run (time, simulator port) masked."""
    document = re.sub(rb'"export_timestamp": "[^"]*"', b'"export_timestamp": "MASKED"', document)
    return re.sub(rb'"source": "[^"]*"', b'"source": "MASKED"', document)


def api(state: dict[str, Any]) -> respx.MockRouter:
    """Two pages of 3 users; ``state['version']`` is in every email, so runs differ."""
    router = respx.mock(assert_all_called=False)

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        users = [{"id": i, "email": f"v{state['version']}@x.io", "first_name": "A",
                  "last_name": "B", "avatar": "https://x.io/a.png"}
                 for i in range(page * 3 - 2, page * 3 + 1)]  # fmt: skip
        if state.get("dirty"):
            users.append({"email": "no-id@x.io"})
        return httpx.Response(200, json={"total_pages": 2, "data": users})

    router.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
    return router


class MemoryDatabase:
    """A transactional sink over a dict: ``memdb://NAME?fail=open|write|commit``."""

    files: ClassVar[tuple[str, ...]] = ()
    transactional: ClassVar[bool] = True
    tables: ClassVar[dict[str, dict[int, dict[str, Any]]]] = {}
    calls: ClassVar[list[str]] = []

    def __init__(self, context: SinkContext) -> None:
        url = urlsplit(context.target)
        self.name = url.netloc
        self.fail = parse_qs(url.query).get("fail", [""])[0]
        self.pending: list[dict[str, Any]] | None = None

    @property
    def label(self) -> str:
        return f"memdb://{self.name}"

    def _step(self, step: str) -> None:
        self.calls.append(f"{step} {self.name}")
        if self.fail == step:
            raise OutputError(f"{self.label}: {step} failed")

    async def open(self) -> None:
        self._step("open")
        self.pending = []

    async def write(self, batch: CustomerBatch) -> None:
        self._step("write")
        assert self.pending is not None
        self.pending += batch.records()

    async def commit(self, metadata: RunMetadata) -> None:
        self._step("commit")
        assert self.pending is not None and metadata.export["total_customers"] == len(self.pending)
        table = self.tables.setdefault(self.name, {})
        table.update((c["customer_id"], c) for c in self.pending)  # an upsert by id
        self.pending = None

    async def abort(self) -> None:
        self.calls.append(f"abort {self.name}")
        self.pending = None


class LinesFile:
    """A second file format: one customer per line, in processed_customers.lines."""

    files: ClassVar[tuple[str, ...]] = ("processed_customers.lines",)
    transactional: ClassVar[bool] = False

    def __init__(self, context: SinkContext) -> None:
        self.outputs = context.outputs
        self.lines: list[bytes] = []

    @property
    def label(self) -> str:
        return self.files[0]

    async def open(self) -> None:
        self.lines = []

    async def write(self, batch: CustomerBatch) -> None:
        self.lines += batch.lines

    async def commit(self, metadata: RunMetadata) -> None:
        with self.outputs.staging(self.files[0]) as handle:
            handle.writelines(line + b"\n" for line in self.lines)

    async def abort(self) -> None:
        self.lines = []


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run's sink list (the next issue fills it from --format/--db); the fakes registered."""
    chosen = ["json"]
    monkeypatch.setitem(sinks.DATABASES, "memdb", "tests.test_sinks:MemoryDatabase")
    monkeypatch.setitem(sinks.FORMATS, "lines", "tests.test_sinks:LinesFile")
    monkeypatch.setattr(pipeline, "_sink_targets", lambda settings: list(chosen))
    MemoryDatabase.tables.clear()
    MemoryDatabase.calls.clear()
    return chosen


def snapshot(folder: Path) -> dict[str, bytes]:
    """The output files in ``folder`` and their bytes (pipeline.log and hidden files aside)."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if not p.name.startswith(".") and p.name != "pipeline.log"}  # fmt: skip


def hidden(folder: Path) -> list[str]:
    """Temp, staged or scratch files left in ``folder`` (the kept checkpoint aside)."""
    return [p.name for p in folder.iterdir()
            if p.name.startswith(".") and not p.name.startswith(".checkpoint")]  # fmt: skip


# -- the batch ------------------------------------------------------------------------------


def test_batches_cut_the_winners_in_order_and_parse_only_when_asked() -> None:
    lines = [orjson.dumps({"customer_id": i, "tier": "basic"}) for i in range(1, 8)]
    cut = list(batches(iter(lines), size=3))
    assert [len(b) for b in cut] == [3, 3, 1]
    assert [line for b in cut for line in b.lines] == lines
    first = cut[0]
    assert first._records is None  # nothing parsed for a sink that copies the bytes
    assert first.records() == [{"customer_id": i, "tier": "basic"} for i in (1, 2, 3)]
    assert first.records() is first.records()  # parsed once, whichever sinks ask
    assert first.columns() == {"customer_id": [1, 2, 3], "tier": ["basic"] * 3}
    assert list(batches(iter([]))) == []


# -- the registry ---------------------------------------------------------------------------


def test_a_format_or_database_is_one_registry_line(tmp_path: Path, targets: list[str]) -> None:
    outputs = RunOutputs(tmp_path, sinks.output_files())
    made = sinks.create(["json", "lines", "memdb://x", "json"], outputs, fast_settings())
    assert [type(s).__name__ for s in made] == ["JsonDocumentSink", "LinesFile", "MemoryDatabase"]
    assert sinks.output_files() == tuple(
        f"processed_customers.{ext}" for ext in ("json", "jsonl", "parquet", "lines")
    )
    assert [s.label for s in sinks.commit_order(made[::-1])] == [
        "processed_customers.lines", "processed_customers.json", "memdb://x",
    ]  # fmt: skip


def test_an_unknown_format_or_database_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"format 'xml' \(known: json, jsonl, parquet\)"):
        sinks.sink_class("xml")
    with pytest.raises(ConfigError, match=r"no database sink for oracle:// URLs"):
        sinks.sink_class("oracle://scott:tiger@db/x")


# -- the JSON document ----------------------------------------------------------------------


async def test_the_json_sink_writes_todays_bytes_for_a_reqres_simulator_run(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=90, per_page=6, dirty_rate=0.4, duplicate_rate=0.15, seed=5)
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=6))
    assert (result.customers, result.duplicates_removed, result.rejected) == (85, 12, 5)
    golden = (GOLDEN / "processed_customers.reqres.json").read_bytes()  # written before the port
    assert masked(result.customers_path.read_bytes()) == golden


async def test_the_json_sink_writes_todays_bytes_when_no_customer_is_left(tmp_path: Path) -> None:
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(
            return_value=httpx.Response(200, json={"total_pages": 1, "data": [{"email": "x"}]})
        )
        result = await run_pipeline(fast_settings(output_dir=tmp_path))
    golden = (GOLDEN / "processed_customers.empty.json").read_bytes()
    assert masked(result.customers_path.read_bytes()) == golden


# -- failures and the commit rule -----------------------------------------------------------


@pytest.mark.parametrize("step", ["open", "write", "commit"])
async def test_a_sink_that_fails_leaves_the_last_outputs_and_is_aborted(
    tmp_path: Path, targets: list[str], step: str
) -> None:
    state = {"version": 1, "dirty": True}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path))
        before = snapshot(tmp_path)
        assert sorted(before) == sorted(OUTPUTS)
        state.update(version=2, dirty=False)
        targets.append(f"memdb://db?fail={step}")
        with pytest.raises(OutputError, match=f"memdb://db: {step} failed"):
            await run_pipeline(fast_settings(output_dir=tmp_path))
    assert snapshot(tmp_path) == before  # every file of the last run, byte for byte
    assert hidden(tmp_path) == []  # no staged, temp or scratch file left
    assert MemoryDatabase.calls[-1] == "abort db" and "db" not in MemoryDatabase.tables
    if step == "open":  # a sink that cannot work fails the run before any request
        assert MemoryDatabase.calls == ["open db", "abort db"]


async def test_when_the_second_database_fails_to_commit_the_first_keeps_this_run(
    tmp_path: Path, targets: list[str]
) -> None:
    state = {"version": 1}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path))
        before = snapshot(tmp_path)
        state["version"] = 2
        targets += ["memdb://a", "memdb://b?fail=commit"]
        with pytest.raises(OutputError, match=r"memdb://b: commit failed \(already committed "
                           r"with this run's customers: memdb://a;"):  # fmt: skip
            await run_pipeline(fast_settings(output_dir=tmp_path))
        # The files were staged first, then a committed, then b failed: b and the files
        # were dropped, a keeps this run's customers whole.
        assert MemoryDatabase.calls[-3:] == ["commit a", "commit b", "abort b"]
        assert snapshot(tmp_path) == before and hidden(tmp_path) == []
        assert "b" not in MemoryDatabase.tables
        assert {c["email"] for c in MemoryDatabase.tables["a"].values()} == {"v2@x.io"}
        assert (tmp_path / ".checkpoint.sqlite3").exists()  # kept: --resume levels them
        targets[-1] = "memdb://b"
        await run_pipeline(fast_settings(output_dir=tmp_path), mode="resume")
    assert MemoryDatabase.tables["a"] == MemoryDatabase.tables["b"]
    document = orjson.loads((tmp_path / "processed_customers.json").read_bytes())
    assert document["customers"] == list(MemoryDatabase.tables["b"].values())


async def test_files_are_staged_before_any_database_commits(
    tmp_path: Path, targets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.replace

    def full_disk(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == ".processed_customers.json.staged":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    targets += ["memdb://a"]
    with api({"version": 1}), pytest.raises(OutputError, match="No space left") as error:
        await run_pipeline(fast_settings(output_dir=tmp_path))
    assert "already committed" not in str(error.value)
    assert "commit a" not in MemoryDatabase.calls and MemoryDatabase.calls[-1] == "abort a"
    assert MemoryDatabase.tables == {} and snapshot(tmp_path) == {} and hidden(tmp_path) == []


async def test_a_format_this_run_did_not_write_leaves_the_folder_with_the_run(
    tmp_path: Path, targets: list[str]
) -> None:
    with api({"version": 1}):
        targets.append("lines")
        await run_pipeline(fast_settings(output_dir=tmp_path))
        assert (tmp_path / "processed_customers.lines").read_bytes().count(b"\n") == 6
        targets.remove("lines")
        await run_pipeline(fast_settings(output_dir=tmp_path))
    assert sorted(snapshot(tmp_path)) == ["processed_customers.json", "summary_report.json"]


def test_the_folder_sweep_knows_every_registered_format(tmp_path: Path, targets: list[str]) -> None:
    left = [".processed_customers.lines.staged", ".processed_customers.json.x1y2.tmp"]
    kept = ["processed_customers.lines", ".other.staged"]
    for name in left + kept:
        (tmp_path / name).touch()
    with exclusive_folder(tmp_path, sinks.output_files()):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
