"""The JSONL and Parquet file sinks, each read back by independent readers (DuckDB, pyarrow)
and compared with the JSON export customer by customer."""

from __future__ import annotations

import datetime
import errno
import functools
import json
import os
import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import duckdb
import httpx
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
import respx
from click.testing import CliRunner

from customer_pipeline import OutputError, pipeline, run_pipeline
from customer_pipeline.cli import main
from customer_pipeline.fields import FIELD_TABLE
from customer_pipeline.models import Customer
from customer_pipeline.sinks import batches, parquet
from customer_pipeline.sinks._staged import StagedFile
from customer_pipeline.sinks.parquet import METADATA_KEY, arrow_schema

from .conftest import BASE_URL, fast_settings
from .helpers import pages_api
from .test_sinks import api, hidden, snapshot

FORMATS = ["json", "jsonl", "parquet"]
JSON, JSONL, PARQUET = (f"processed_customers.{ext}" for ext in ("json", "jsonl", "parquet"))
ENUMS = [f.name for f in FIELD_TABLE.business]


def exported(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSON export's customers and metadata, as the stdlib reads them."""
    document = json.loads((folder / JSON).read_bytes())
    return document["customers"], document["metadata"]


def duckdb_rows(query: str) -> list[dict[str, Any]]:
    """What DuckDB returns for ``query``, as dicts, in the order it returns them."""
    relation = duckdb.sql(query)
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def read_back(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The customers of the JSONL and the Parquet file, each by two independent readers."""
    jsonl, parquet_file = folder / JSONL, folder / PARQUET
    return {
        "jsonl by duckdb": duckdb_rows(f"select * from read_json('{jsonl}', format='nd')"),
        "jsonl by pyarrow": pa_json.read_json(jsonl).to_pylist(),
        "parquet by duckdb": duckdb_rows(f"select * from '{parquet_file}'"),
        "parquet by pyarrow": pq.read_table(parquet_file).to_pylist(),
    }  # fmt: skip


def assert_same_as_the_export(folder: Path) -> list[dict[str, Any]]:
    """Every reader of every file gives the export's customers, same values, same types."""
    customers, _ = exported(folder)
    for reader, rows in read_back(folder).items():
        assert len(rows) == len(customers), reader
        for row, customer in zip(rows, customers, strict=True):
            assert row == customer, reader
            assert [type(v) for v in row.values()] == [type(v) for v in customer.values()], reader
    return customers


def assert_parquet_schema(path: Path) -> None:
    """The file's typed columns: int64 id, dictionaries for enums, list<string> issues."""
    schema = pq.read_schema(path)
    assert schema.names == list(FIELD_TABLE.column_names) == list(Customer.model_fields)
    assert schema.field("customer_id").type == pa.int64()
    assert not schema.field("customer_id").nullable
    assert schema.field("data_quality_score").type == pa.int64()
    for name in ENUMS:
        kind = schema.field(name).type
        assert pa.types.is_dictionary(kind) and kind.value_type == pa.string(), name
        assert not schema.field(name).nullable
    issues = schema.field("quality_issues").type
    assert pa.types.is_list(issues) and issues.value_type == pa.string()
    for name in ("first_name", "last_name", "full_name", "email", "email_domain", "avatar"):
        assert schema.field(name).type == pa.string() and schema.field(name).nullable, name
    assert schema.remove_metadata().equals(arrow_schema())


def parquet_metadata(path: Path) -> dict[str, Any]:
    """The export's metadata block, from the Parquet file's key-value metadata."""
    kv = pq.read_metadata(path).metadata
    return orjson.loads(kv[METADATA_KEY.encode()])  # type: ignore[no-any-return]


# -- equality -------------------------------------------------------------------------------


async def test_dirty_records_and_duplicates_read_back_equal_to_the_json_export(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 20)  # several row groups from 85 customers
    monkeypatch.setattr(pipeline, "batches", functools.partial(batches, size=7))
    base, _ = await simulator(total=90, per_page=6, dirty_rate=0.4, duplicate_rate=0.15, seed=5)
    settings = fast_settings(base_url=base, output_dir=tmp_path, per_page=6, format=FORMATS)
    result = await run_pipeline(settings)
    assert (result.customers, result.duplicates_removed, result.rejected) == (85, 12, 5)
    customers = assert_same_as_the_export(tmp_path)
    assert any(c["quality_issues"] for c in customers)  # the dirt is in the comparison
    assert {None} <= {c["email"] for c in customers} & {c["first_name"] for c in customers}
    # The JSONL lines are the JSON document's customer lines, byte for byte.
    document_lines = (tmp_path / JSON).read_bytes().splitlines()
    lines = [line.rstrip(b",") for line in document_lines if line.startswith(b'{"customer_id"')]
    assert (tmp_path / JSONL).read_bytes() == b"".join(line + b"\n" for line in lines)
    assert_parquet_schema(tmp_path / PARQUET)
    assert parquet_metadata(tmp_path / PARQUET) == exported(tmp_path)[1]
    meta = pq.read_metadata(tmp_path / PARQUET)
    # Written as the batches came: a row group each time 20 customers were pending.
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [21, 21, 21, 21, 1]
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}


async def test_hard_strings_survive_both_formats(tmp_path: Path) -> None:
    names = ['Zoë "Q" \\ O\'Brien', "tab\tnew\nline\u2028", "😀 \U0001d518", "nul\x00 bell\x07",
             "x" * 70_000]
    users = [{"id": i + 1, "email": f"u{i}@x.io", "first_name": name, "last_name": name[::-1],
              "avatar": "https://x.io/a.png"} for i, name in enumerate(names)]  # fmt: skip
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(
            return_value=httpx.Response(200, json={"total_pages": 1, "data": users})
        )
        await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
    customers = assert_same_as_the_export(tmp_path)
    assert [c["first_name"] for c in customers] == [name.strip() for name in names]


async def test_a_run_with_no_customer_writes_valid_empty_files(tmp_path: Path) -> None:
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(
            return_value=httpx.Response(200, json={"total_pages": 1, "data": [{"email": "x"}]})
        )
        result = await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
    assert result.customers == 0 and result.rejected == 1
    assert (tmp_path / JSONL).read_bytes() == b""  # zero lines (pyarrow and polars refuse it)
    assert duckdb_rows(f"select * from read_json('{tmp_path / JSONL}')") == []
    table = pq.read_table(tmp_path / PARQUET)
    assert table.num_rows == 0
    assert_parquet_schema(tmp_path / PARQUET)
    assert duckdb.sql(f"select count(*) from '{tmp_path / PARQUET}'").fetchall() == [(0,)]
    assert parquet_metadata(tmp_path / PARQUET)["total_customers"] == 0


async def test_an_incomplete_run_writes_what_it_has(tmp_path: Path) -> None:
    with pages_api({3}):
        result = await run_pipeline(
            fast_settings(output_dir=tmp_path, max_retries=0, format=FORMATS)
        )
    assert result.exit_code == 3 and result.failed_pages == [3]
    customers = assert_same_as_the_export(tmp_path)
    assert [c["customer_id"] for c in customers] == [i for i in range(1, 49) if not 13 <= i <= 18]
    assert parquet_metadata(tmp_path / PARQUET)["complete"] is False


# -- the commit rule ------------------------------------------------------------------------


class FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle: Any, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def fill_disk(monkeypatch: pytest.MonkeyPatch, name: str, when: str) -> None:
    """Make the disk full for file ``name``: ``writing`` it, or ``staging`` it at commit."""
    if when == "staging":
        real_replace = os.replace

        def full_disk(src: Any, dst: Any, **kwargs: Any) -> None:
            if Path(dst).name == f".{name}.staged":
                raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst, **kwargs)

        monkeypatch.setattr(os, "replace", full_disk)
        return
    real_open = StagedFile.open

    def cramped(self: StagedFile) -> Any:
        handle = real_open(self)
        if self.name == name:  # room for Parquet's header, not for a customer
            self._handle = handle = FullDisk(handle, room=4)
        return handle

    monkeypatch.setattr(StagedFile, "open", cramped)


@pytest.mark.parametrize("when", ["writing", "staging"])
@pytest.mark.parametrize("name", [JSONL, PARQUET])
async def test_a_full_disk_leaves_the_last_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, when: str
) -> None:
    state = {"version": 1}
    with api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
        before = snapshot(tmp_path)
        assert sorted(before) == sorted([JSON, JSONL, PARQUET, "summary_report.json"])
        fill_disk(monkeypatch, name, when)
        state["version"] = 2
        with pytest.raises(OutputError, match=f"cannot write .*{name}: No space left") as error:
            await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
    assert error.value.disk_full
    assert snapshot(tmp_path) == before and hidden(tmp_path) == []


async def test_a_failed_run_leaves_no_temp_file_and_the_last_set(tmp_path: Path) -> None:
    with api({"version": 1}):
        await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
    before = snapshot(tmp_path)
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(return_value=httpx.Response(401))
        with pytest.raises(Exception, match="API key"):
            await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
    assert snapshot(tmp_path) == before and hidden(tmp_path) == []


async def test_a_run_without_a_format_removes_its_earlier_file(tmp_path: Path) -> None:
    with api({"version": 1}):
        await run_pipeline(fast_settings(output_dir=tmp_path, format=FORMATS))
        await run_pipeline(fast_settings(output_dir=tmp_path, format=["jsonl"]))
    assert sorted(snapshot(tmp_path)) == [JSONL, "summary_report.json"]


# -- the schema -----------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("annotation", "arrow", "nullable"),
    [
        (int, pa.int64(), False),
        (str | None, pa.string(), True),
        (Colour, pa.dictionary(pa.int8(), pa.string()), False),
        (Literal["a", "b"] | None, pa.dictionary(pa.int8(), pa.string()), True),
        (list[str], pa.list_(pa.string()), False),
        (bool, pa.bool_(), False),
        (float | None, pa.float64(), True),
        (datetime.datetime | None, pa.timestamp("us", tz="UTC"), True),
        (datetime.date, pa.date32(), False),
    ],
)
def test_a_model_field_gets_its_parquet_type(annotation: Any, arrow: Any, nullable: bool) -> None:
    field = parquet._arrow_field("x", annotation)
    assert (field.type, field.nullable) == (arrow, nullable)


@pytest.mark.parametrize("annotation", [dict[str, int], list[int], int | str])
def test_a_model_field_with_no_parquet_type_is_named(annotation: Any) -> None:
    with pytest.raises(TypeError, match=r"Customer\.x: no Parquet type"):
        parquet._arrow_field("x", annotation)


# -- pyarrow missing ------------------------------------------------------------------------


def test_parquet_without_pyarrow_exits_2_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import pyarrow` now fails
    with socket.socket() as api_socket:  # an API that would see any connection
        api_socket.bind(("127.0.0.1", 0))
        api_socket.listen()
        api_socket.setblocking(False)
        url = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
        args = ["run", "--base-url", url, "--format", "json", "--format", "parquet",
                "--output-dir", str(tmp_path), "--no-progress"]  # fmt: skip
        result = CliRunner().invoke(main, args)
        with pytest.raises(BlockingIOError):
            api_socket.accept()  # nobody connected
    assert result.exit_code == 2, result.output
    assert "\nerror: the parquet format needs pyarrow >= 17 (cannot import it" in result.output
    assert "install customer-pipeline[parquet]" in result.output
    assert "Traceback" not in result.output
    assert sorted(snapshot(tmp_path)) == [] and hidden(tmp_path) == []
