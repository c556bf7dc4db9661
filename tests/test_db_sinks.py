"""The database sinks (SQLite, DuckDB, PostgreSQL), each read back by an independent reader.

sqlite3 reads SQLite, a separate duckdb connection reads DuckDB and psycopg reads PostgreSQL
(the sink writes with asyncpg), and what they read is compared with the JSON export,
customer by customer, field by field and type by type. PostgreSQL is a real server started
for the session (tests/postgres.py); its tests skip where it is not installed, and fail
instead under PIPELINE_TESTS_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
import respx
from click.testing import CliRunner

from customer_pipeline import ConfigError, OutputError, run_pipeline, sinks
from customer_pipeline.cli import main
from customer_pipeline.fields import FIELD_TABLE
from customer_pipeline.settings import DatabaseUrl
from customer_pipeline.sinks import _tables
from customer_pipeline.sinks.duckdb import DuckDbSink
from customer_pipeline.sinks.sqlite import SqliteSink
from customer_pipeline.writer import RunOutputs

from .conftest import BASE_URL, SECRET_KEY, fast_settings
from .helpers import pages_api, simulator_process
from .jsonserver import free_port
from .postgres import PostgresCluster

Reader = Callable[[str], list[dict[str, Any]]]  # a query to rows as dicts
KINDS = ["sqlite", "duckdb", "postgresql"]
DIALECTS = {"sqlite": _tables.SQLITE, "duckdb": _tables.DUCKDB, "postgresql": _tables.POSTGRES}
PASSWORD = "pg:s3cr@t/%word"  # made up, with the characters URLs escape


@dataclass
class Database:
    """A database under test: its --db URL and independent readers of what the sink wrote."""

    kind: str
    url: str
    query: Reader  # by a driver the sink does not use

    def customers(self, table: str = "customers") -> list[dict[str, Any]]:
        """The table's customers by id, in the export's shape (SQLite's JSON text parsed)."""
        rows = self.query(f"SELECT * FROM {table} ORDER BY customer_id")
        if self.kind == "sqlite":
            for row in rows:
                row["quality_issues"] = json.loads(row["quality_issues"])
        return [{name: row[name] for name in _tables.NAMES} for row in rows]

    def runs(self) -> list[dict[str, Any]]:
        """The pipeline_runs rows, oldest first, the report parsed."""
        rows = self.query("SELECT * FROM pipeline_runs ORDER BY loaded_at")
        for row in rows:
            if isinstance(row["report"], str):
                row["report"] = json.loads(row["report"])
        return rows


def sqlite_reader(path: Path) -> Reader:
    def query(sql: str) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql)]

    return query


def duckdb_reader(path: Path) -> Reader:
    def query(sql: str) -> list[dict[str, Any]]:
        with duckdb.connect(str(path), read_only=True) as db:
            cursor = db.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return query


def postgres_reader(cluster: PostgresCluster, database: str) -> Reader:
    from psycopg.rows import dict_row

    def query(sql: str) -> list[dict[str, Any]]:
        with cluster.connect(database) as db:
            return db.cursor(row_factory=dict_row).execute(sql).fetchall()  # type: ignore[arg-type]

    return query


@pytest.fixture(params=KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """Each kind of database in turn, empty; PostgreSQL's cluster starts on first use."""
    kind: str = request.param
    if kind == "sqlite":
        path = tmp_path / "db" / "customers.db"
        path.parent.mkdir()
        return Database(kind, f"sqlite:///{path.relative_to(tmp_path)}", sqlite_reader(path))
    if kind == "duckdb":
        path = tmp_path / "customers.duckdb"
        return Database(kind, f"duckdb:///{path}", duckdb_reader(path))  # absolute: 4 slashes
    cluster, name = request.getfixturevalue("postgres")
    return Database(kind, cluster.url(name), postgres_reader(cluster, name))


def versioned_api(state: dict[str, Any]) -> respx.MockRouter:
    """``state['pages']`` pages of 3 users; ``state['version']`` is in every email."""
    router = respx.mock(assert_all_called=False)

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        users = [{"id": i, "email": f"u{i}.v{state['version']}@x.io", "first_name": "Ann",
                  "last_name": state.get("last_name", "Lee"), "avatar": "https://x.io/a.png"}
                 for i in range(page * 3 - 2, page * 3 + 1)]  # fmt: skip
        return httpx.Response(200, json={"total_pages": state["pages"], "data": users})

    router.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
    return router


def exported(folder: Path) -> list[dict[str, Any]]:
    """The customers of processed_customers.json."""
    customers: list[dict[str, Any]] = orjson.loads(
        (folder / "processed_customers.json").read_bytes()
    )["customers"]
    return customers


def same(rows: list[dict[str, Any]], customers: list[dict[str, Any]]) -> None:
    """Equal customer by customer, with the same types (1 is not True, not 1.0, not "1")."""
    assert len(rows) == len(customers)
    for row, customer in zip(rows, customers, strict=True):
        assert orjson.dumps(row) == orjson.dumps(customer), customer["customer_id"]


# -- equality with the JSON export ----------------------------------------------------------


async def test_a_load_holds_the_json_export_customer_by_customer(
    database: Database, simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=90, per_page=6, dirty_rate=0.4, duplicate_rate=0.15, seed=5)
    out = tmp_path / "out"
    settings = fast_settings(base_url=base, output_dir=out, per_page=6, db=[database.url])
    result = await run_pipeline(settings)
    assert (result.customers, result.duplicates_removed, result.rejected) == (85, 12, 5)
    customers = exported(out)
    assert any(c["quality_issues"] for c in customers)
    assert any(c["email"] is None for c in customers)
    same(database.customers(), customers)
    (run,) = database.runs()
    report = orjson.loads((out / "summary_report.json").read_bytes())
    assert run["report"] == report
    assert (run["complete"], run["customers"], run["raw_records"], run["duplicates_removed"],
            run["rejected"]) == (True, 85, report["counts"]["raw_records"], 12, 5)  # fmt: skip
    assert (run["source"], run["table_name"], run["db_mode"]) == (base, "customers", "upsert")
    started = run["started_at"]
    started = datetime.fromisoformat(started) if isinstance(started, str) else started
    assert started == datetime.fromisoformat(report["run"]["started_at"])
    # The run id is the one the run's log lines are filed under, and the log names it.
    log = (out / "pipeline.log").read_text()
    assert f"85 customers loaded into customers (upsert), run {run['run_id']}" in log


async def test_values_that_are_hard_to_quote_arrive_as_they_were_sent(
    database: Database, tmp_path: Path
) -> None:
    names = ["O'Brien", 'say "hi"', "back\\slash", "\\u0000 as text", "ünï 😀", "tab\there",
             "new\nline", "semi;colon --", "nul\x00inside"]  # fmt: skip
    users = [{"id": i, "email": f"u{i}@x.io", "first_name": name, "last_name": "L",
              "avatar": "https://x.io/a.png"} for i, name in enumerate(names, 1)]  # fmt: skip
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(
            return_value=httpx.Response(200, json={"total_pages": 1, "data": users})
        )
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url]))
    customers = exported(tmp_path)
    assert [c["first_name"] for c in customers] == names
    if database.kind == "postgresql":  # text cannot hold NUL: it becomes U+FFFD, and only it
        for customer in customers:
            for name in ("first_name", "full_name"):
                customer[name] = customer[name].replace("\x00", "\ufffd")
    same(database.customers(), customers)


# -- reruns, replace, incomplete ------------------------------------------------------------


async def test_a_rerun_updates_what_changed_and_keeps_the_customers_it_did_not_see(
    database: Database, tmp_path: Path
) -> None:
    state = {"version": 1, "pages": 3}
    with versioned_api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url]))
        first = database.customers()
        state.update(version=2, pages=2)  # customers 7..9 are not in this run
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url]))
    rows = database.customers()
    assert [r["customer_id"] for r in rows] == list(range(1, 10))  # no duplicate rows
    same(rows[:6], exported(tmp_path))  # updated to the rerun's values
    assert {r["email"] for r in rows[:6]} == {f"u{i}.v2@x.io" for i in range(1, 7)}
    same(rows[6:], first[6:])  # kept as the first run left them
    runs = database.runs()
    assert [r["customers"] for r in runs] == [9, 6] and len({r["run_id"] for r in runs}) == 2


async def test_replace_mode_swaps_the_whole_table(database: Database, tmp_path: Path) -> None:
    state = {"version": 1, "pages": 3}
    with versioned_api(state):
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url]))
        state.update(version=2, pages=1)
        settings = fast_settings(output_dir=tmp_path, db=[database.url], db_mode="replace")
        await run_pipeline(settings)
    same(database.customers(), exported(tmp_path))  # customers 1..3 of the rerun, nothing else
    assert [(r["db_mode"], r["customers"]) for r in database.runs()] == [
        ("upsert", 9), ("replace", 3),
    ]  # fmt: skip


async def test_an_incomplete_run_loads_what_it_has_and_records_complete_false(
    database: Database, tmp_path: Path
) -> None:
    with pages_api(failing={3}, total_pages=4):
        result = await run_pipeline(
            fast_settings(output_dir=tmp_path, db=[database.url], max_retries=1)
        )
    assert result.exit_code == 3 and result.failed_pages == [3]
    customers = exported(tmp_path)
    assert [c["customer_id"] for c in customers] == [*range(1, 13), *range(19, 25)]
    same(database.customers(), customers)
    (run,) = database.runs()
    assert run["complete"] in (False, 0) and run["report"]["run"]["failed_pages"] == [3]


# -- a crash mid-load -----------------------------------------------------------------------

# The real command, with the sink's write wrapped: once the first batch is in the database's
# open transaction, the process kills itself with SIGKILL, as kill -9 would.
KILLED_MID_LOAD = """
import os, signal, sys
from customer_pipeline import sinks
sink = sinks.sink_class(sys.argv[1])
real = sink.write
async def write(self, batch):
    await real(self, batch)
    os.kill(os.getpid(), signal.SIGKILL)
sink.write = write
from customer_pipeline.cli import main
from customer_pipeline.fields import FIELD_TABLE
main(sys.argv[2:], prog_name="customer-pipeline")
"""


def test_a_load_killed_mid_way_leaves_the_table_as_it_was(
    database: Database, tmp_path: Path
) -> None:
    args = ["--per-page", "100", "--rate-limit", "0", "--no-progress", "--api-key", SECRET_KEY,
            "--db", database.url]  # fmt: skip
    with simulator_process("--total", "5000", "--per-page", "100", "--failure-rate", "0",
                           "--rate-limit", "0", "--latency-ms", "0") as url:  # fmt: skip
        run = ["run", "--base-url", url, *args]
        first = CliRunner().invoke(main, [*run, "--output-dir", str(tmp_path / "1")])
        assert first.exit_code == 0, first.output
        before, runs = database.customers(), database.runs()
        assert len(before) == 5000
        # Another seed changes every customer's business fields; replace would empty the rest.
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_MID_LOAD, database.url, *run, "--seed", "7",
             "--db-mode", "replace", "--output-dir", str(tmp_path / "2")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert database.customers() == before and database.runs() == runs
        # The file or server recovered: the next run loads, and changes every customer.
        again = CliRunner().invoke(main, [*run, "--seed", "7", "--output-dir", str(tmp_path / "3")])
        assert again.exit_code == 0, again.output
    after = database.customers()
    same(after, exported(tmp_path / "3"))
    assert after != before and len(database.runs()) == 2


# -- bad databases fail before any request --------------------------------------------------


async def test_a_table_without_a_column_the_load_needs_fails_before_any_request(
    database: Database, tmp_path: Path
) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.get(f"{BASE_URL}/api/users")
        first = fast_settings(output_dir=tmp_path, db=[database.url], table="clients")
        if database.kind == "postgresql":  # a table of someone else's, with a different shape
            await _create_foreign_table(database)
        else:
            _create_foreign_table_locally(database)
        with pytest.raises(ConfigError) as caught:
            await run_pipeline(first)
    assert route.call_count == 0
    text = DIALECTS[database.kind].types["text"]
    assert str(caught.value) == (
        f"{database.url}: table clients has no column full_name, email_domain: choose another "
        f"--table, or add them (ALTER TABLE clients ADD COLUMN full_name {text}; "
        f"ALTER TABLE clients ADD COLUMN email_domain {text})"
    )


FOREIGN = ("CREATE TABLE clients (customer_id BIGINT PRIMARY KEY, first_name TEXT, "
           "last_name TEXT, email TEXT, avatar TEXT, engagement_level TEXT, "
           "activity_status TEXT, acquisition_channel TEXT, market_segment TEXT, "
           "customer_tier TEXT, data_quality_score INTEGER, quality_issues TEXT)")  # fmt: skip


async def _create_foreign_table(database: Database) -> None:
    import asyncpg

    db = await asyncpg.connect(database.url)
    try:
        await db.execute(FOREIGN)
    finally:
        await db.close()


def _create_foreign_table_locally(database: Database) -> None:
    target = _tables.file_path(DatabaseUrl(database.url))
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(target)) as db:
            db.execute(FOREIGN)
            db.commit()
    else:
        with duckdb.connect(str(target)) as db:
            db.execute(FOREIGN)


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_a_missing_library_exits_2_naming_the_extra(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module, extra = {"duckdb": ("duckdb", "duckdb"), "postgresql": ("asyncpg", "postgres")}[kind]
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    url = "duckdb:///x.duckdb" if kind == "duckdb" else f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"
    result = CliRunner().invoke(
        main, ["run", "--base-url", "http://127.0.0.1:1", "--db", url, "--no-progress",
               "--output-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: --db {kind}:// needs the {module} package, which is not installed: pip " \
           f"install 'customer-pipeline[{extra}]'" in result.output  # fmt: skip
    assert "Traceback" not in result.output and "s3cr" not in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/x.db", "a sqlite URL has no host; write sqlite:///relative/path or "
                               "sqlite:////absolute/path"),
        ("duckdb:///:memory:", "an in-memory database would keep nothing after the run"),
        ("sqlite:///", "name a database file"),
        ("duckdb:///x.duckdb?mode=ro", "a duckdb URL takes no ?query"),
    ],
)  # fmt: skip
def test_a_bad_embedded_database_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _tables.file_path(DatabaseUrl(url))


def test_the_columns_are_the_customer_model_fields_typed_from_their_annotations() -> None:
    assert FIELD_TABLE.column_names == _tables.NAMES
    kinds = {c.name: (c.kind, c.nullable) for c in _tables.COLUMNS}
    assert kinds["customer_id"] == ("key", False) and kinds["email"] == ("text", True)
    assert kinds["customer_tier"] == ("text", False)  # an enum: its values are text
    assert kinds["data_quality_score"] == ("int", False)
    assert kinds["quality_issues"] == ("list", False)
    # A new field of a known type is a new column with no other edit; an unknown type says
    # where to add it.
    assert _tables._column("lifetime_value", int | None) == _tables.Column(
        "lifetime_value", "int", True
    )
    with pytest.raises(TypeError, match=r"Customer.ratio: no database column type .* in cust"):
        _tables._column("ratio", float)


def test_embedded_database_paths_follow_sqlalchemy() -> None:
    assert _tables.file_path(DatabaseUrl("sqlite:///data/x.db")) == Path("data/x.db")
    assert _tables.file_path(DatabaseUrl("duckdb:////srv/x.duckdb")) == Path("/srv/x.duckdb")
    assert _tables.file_path(DatabaseUrl("sqlite:///my%20data.db")) == Path("my data.db")


HOLD = "import duckdb, sys; db = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"


@pytest.fixture
def held_duckdb() -> Iterator[str]:
    """held.duckdb (in the test's folder), held open by another process."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "held.duckdb"], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield "duckdb:///held.duckdb"
    finally:
        holder.kill()
        holder.wait()


async def test_a_missing_folder_or_a_file_in_use_fails_before_any_request(
    tmp_path: Path, held_duckdb: str
) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.get(f"{BASE_URL}/api/users")
        for url, reason in [
            ("sqlite:///nowhere/x.db", "cannot open the database: the folder nowhere does"),
            ("duckdb:///nowhere/x.duckdb", "cannot open the database: the folder nowhere"),
            (held_duckdb, r"cannot open the database: .*lock.* \(another program is using "
                          r"it: try again once it is done\)"),
        ]:  # fmt: skip
            with pytest.raises(OutputError, match=reason):
                await run_pipeline(fast_settings(output_dir=tmp_path / "out", db=[url]))
    assert route.call_count == 0


# -- the event loop stays free --------------------------------------------------------------


@pytest.mark.parametrize("sink", [SqliteSink, DuckDbSink])
async def test_the_embedded_databases_block_a_worker_thread_not_the_loop(
    sink: type[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()
    for name in ("_connect", "_write", "_commit"):
        real = getattr(sink, name)

        def spy(self: Any, *args: Any, _real: Any = real) -> Any:
            threads.add(threading.get_ident())
            return _real(self, *args)

        monkeypatch.setattr(sink, name, spy)
    kind = "sqlite" if sink is SqliteSink else "duckdb"
    with versioned_api({"version": 1, "pages": 2}):
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[f"{kind}:///x.{kind}"]))
    assert threads and threading.get_ident() not in threads


# -- PostgreSQL: the password, and a server that will not let us in -------------------------


@pytest.fixture
def guarded(postgres: tuple[PostgresCluster, str]) -> Iterator[tuple[PostgresCluster, str, str]]:
    """A database owned by a role that logs in with PASSWORD: (cluster, database, role)."""
    cluster, _ = postgres
    role = cluster.create_role(PASSWORD)
    yield cluster, cluster.create_database(owner=role), role


@pytest.fixture(scope="module")
def idle_api() -> Iterator[str]:
    """A simulator in its own process, to count the requests a command made."""
    with simulator_process("--failure-rate", "0", "--rate-limit", "0", "--latency-ms", "0") as url:
        yield url


def requests_served(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_simulator/stats", timeout=10) as answer:
        served: int = orjson.loads(answer.read())["requests"]
    return served


def spellings(secret: str) -> list[str]:
    from urllib.parse import quote

    return [secret, quote(secret, safe=""), "s3cr@t", "%word"]


def test_the_password_reaches_no_log_report_row_or_terminal(
    guarded: tuple[PostgresCluster, str, str], idle_api: str, tmp_path: Path
) -> None:
    cluster, name, role = guarded
    url = cluster.url(name, role, PASSWORD).replace("postgresql://", "postgres://")  # an alias
    result = CliRunner().invoke(
        main, ["run", "--base-url", idle_api, "--db", url, "--no-progress", "--output-dir",
               str(tmp_path), "--api-key", SECRET_KEY, "--log-level", "DEBUG"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reader = postgres_reader(cluster, name)
    (run,) = reader("SELECT run_id, report::text AS report, source FROM pipeline_runs")
    texts = [result.output, *(p.read_text() for p in tmp_path.iterdir() if p.is_file()),
             json.dumps(run)]  # fmt: skip
    assert f"{role}:***@127.0.0.1" in run["report"]  # the settings' URL, masked
    for text in texts:
        for spelling in spellings(PASSWORD):
            assert spelling not in text


@pytest.mark.parametrize(
    ("what", "code", "reason"),
    [
        ("wrong password", 2, "password authentication failed for user"),
        ("no such database", 2, "create the database first, or fix its name in --db"),
        ("server down", 1, "is PostgreSQL running there, and are the host and port in --db"),
    ],
)
def test_a_server_that_will_not_let_us_in_fails_before_any_request(
    guarded: tuple[PostgresCluster, str, str], idle_api: str, tmp_path: Path,
    what: str, code: int, reason: str,
) -> None:  # fmt: skip
    cluster, name, role = guarded
    url = {
        "wrong password": cluster.url(name, role, PASSWORD + "x"),
        "no such database": cluster.url("nothing_here", role, PASSWORD),
        "server down": cluster.url(name, role, PASSWORD).replace(
            f":{cluster.port}/", f":{free_port()}/"
        ),
    }[what]
    before = requests_served(idle_api)
    result = CliRunner().invoke(
        main, ["run", "--base-url", idle_api, "--db", url, "--no-progress", "--output-dir",
               str(tmp_path), "--api-key", SECRET_KEY],
    )  # fmt: skip
    assert result.exit_code == code, result.output
    masked = DatabaseUrl(url).masked
    assert f"error: {masked}: cannot connect: " in result.output and reason in result.output
    # The terminal and the log mask every password they know; the error itself has none.
    settings = fast_settings(base_url=idle_api, output_dir=tmp_path / "lib", db=[url])
    with pytest.raises(ConfigError if code == 2 else OutputError) as caught:
        asyncio.run(run_pipeline(settings))
    assert requests_served(idle_api) == before  # both failed before any request
    sink = sinks.create([url], RunOutputs(tmp_path, ()), settings)[0]
    log = (tmp_path / "pipeline.log").read_text()
    for text in (result.output, log, str(caught.value), repr(sink), sink.label):
        assert "Traceback" not in text
        for spelling in spellings(PASSWORD):
            assert spelling not in text

