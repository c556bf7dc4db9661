"""What the database sinks share: the two tables, their SQL per dialect, URLs, errors, bases.

The customers table's columns come from ``models.Customer`` (whose fields a test holds to
``fields.FIELD_TABLE``), so a new field is a new column with no edit here unless its Python
type is new. Each run also adds a ``pipeline_runs`` row: its run id (the one the run's log
file is filtered on, named in the sink's log line), times (the report's, to the second, and
when the load committed), completeness, counts, source and the whole summary report.

Table names are put into SQL unquoted: ``settings.table`` only lets plain identifiers through.
"""

from __future__ import annotations

import enum
import logging
import secrets as random_ids
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread
import orjson

from ..errors import ConfigError, OutputError
from ..logs import current_run_id, redact
from ..models import Customer
from ..settings import DatabaseUrl
from .base import CustomerBatch, RunMetadata, SinkContext

log = logging.getLogger("customer_pipeline.sinks")
C = TypeVar("C")  # a driver's connection
T = TypeVar("T")

KEY: Final = "customer_id"
RUNS_TABLE: Final = "pipeline_runs"

Kind = Literal["key", "int", "text", "list"]


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the customers table: a Customer field and how its values are stored."""

    name: str
    kind: Kind
    nullable: bool


def _column(name: str, annotation: Any) -> Column:
    """The column for one Customer field; TypeError for a Python type no column maps yet."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    nullable = type(None) in options
    if nullable:
        (annotation,) = (option for option in options if option is not type(None))
    if name == KEY:
        return Column(name, "key", False)
    if annotation is int:
        return Column(name, "int", nullable)
    if annotation is str or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return Column(name, "text", nullable)
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return Column(name, "list", nullable)
    raise TypeError(f"Customer.{name}: no database column type for {annotation!r}; add one "
                    "in customer_pipeline/sinks/_tables.py")  # fmt: skip


COLUMNS: Final = tuple(_column(name, f.annotation) for name, f in Customer.model_fields.items())
NAMES: Final = tuple(column.name for column in COLUMNS)


@dataclass(frozen=True, slots=True)
class Dialect:
    """A database's names for the types the two tables use."""

    name: str
    types: dict[str, str]  # Kind, and the pipeline_runs kinds: bool, count, time, json

    def column_defs(self, columns: Sequence[Column] = COLUMNS, *, constraints: bool = True) -> str:
        """The customers table's column list, with NOT NULL and the primary key if asked."""
        parts = []
        for column in columns:
            part = f"{column.name} {self.types[column.kind]}"
            if constraints and not column.nullable:
                part += " NOT NULL"
            parts.append(part)
        if constraints:
            parts.append(f"PRIMARY KEY ({KEY})")
        return ", ".join(parts)

    def create_customers(self, table: str) -> str:
        """CREATE TABLE IF NOT EXISTS for the customers."""
        return f"CREATE TABLE IF NOT EXISTS {table} ({self.column_defs()})"

    def create_runs(self) -> str:
        """CREATE TABLE IF NOT EXISTS for pipeline_runs."""
        defs = ", ".join(f"{name} {self.types[kind]} NOT NULL" for name, kind in RUN_COLUMNS)
        return f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} ({defs}, PRIMARY KEY (run_id, started_at))"

    def add_column(self, table: str, name: str) -> str:
        """The ALTER TABLE that adds a missing column (shown to the user, never run)."""
        kinds = dict(RUN_COLUMNS) if table == RUNS_TABLE else {c.name: c.kind for c in COLUMNS}
        return f"ALTER TABLE {table} ADD COLUMN {name} {self.types[kinds[name]]}"


SQLITE: Final = Dialect("sqlite", {
    "key": "INTEGER", "int": "INTEGER", "text": "TEXT", "list": "TEXT",  # a JSON array
    "bool": "INTEGER", "count": "INTEGER", "time": "TEXT", "json": "TEXT",
})  # fmt: skip
DUCKDB: Final = Dialect("duckdb", {
    "key": "BIGINT", "int": "INTEGER", "text": "VARCHAR", "list": "VARCHAR[]",
    "bool": "BOOLEAN", "count": "BIGINT", "time": "TIMESTAMPTZ", "json": "JSON",
})  # fmt: skip
POSTGRES: Final = Dialect("postgresql", {
    "key": "bigint", "int": "integer", "text": "text", "list": "text[]",
    "bool": "boolean", "count": "bigint", "time": "timestamptz", "json": "jsonb",
})  # fmt: skip

# (name, kind) of pipeline_runs, in order; RunRow holds the values in the same order.
RUN_COLUMNS: Final = (
    ("run_id", "text"),
    ("table_name", "text"),
    ("db_mode", "text"),
    ("started_at", "time"),
    ("finished_at", "time"),
    ("loaded_at", "time"),
    ("complete", "bool"),
    ("customers", "count"),
    ("raw_records", "count"),
    ("duplicates_removed", "count"),
    ("rejected", "count"),
    ("source", "text"),
    ("pipeline_version", "text"),
    ("report", "json"),
)
RUN_NAMES: Final = tuple(name for name, _ in RUN_COLUMNS)


def upsert(table: str, rows: str) -> str:
    """INSERT of ``rows`` (``VALUES (...)`` or a ``SELECT``) that updates a customer already there.

    ``WHERE true`` keeps SQLite from reading ``ON CONFLICT`` as part of a join after a SELECT.
    """
    updates = ", ".join(f"{name} = excluded.{name}" for name in NAMES if name != KEY)
    where = " WHERE true" if rows.lstrip().upper().startswith("SELECT") else ""
    return (f"INSERT INTO {table} ({', '.join(NAMES)}) {rows}{where} "
            f"ON CONFLICT ({KEY}) DO UPDATE SET {updates}")  # fmt: skip


def insert_run(placeholders: Iterable[str]) -> str:
    """INSERT of one pipeline_runs row with these placeholders, one per RUN_COLUMNS."""
    return f"INSERT INTO {RUNS_TABLE} ({', '.join(RUN_NAMES)}) VALUES ({', '.join(placeholders)})"


def run_row(metadata: RunMetadata, run_id: str, table: str, mode: str) -> tuple[Any, ...]:
    """The pipeline_runs values, in RUN_COLUMNS order; times as aware datetimes."""
    run, counts = metadata.report["run"], metadata.report["counts"]
    return (
        run_id,
        table,
        mode,
        datetime.fromisoformat(run["started_at"]),
        datetime.fromisoformat(run["finished_at"]),
        datetime.now(UTC),  # to the microsecond: orders the runs of one second
        bool(metadata.export["complete"]),
        counts["unique_customers"],
        counts["raw_records"],
        counts["duplicates_removed"],
        counts["rejected"],
        run["source"],
        run["pipeline_version"],
        orjson.dumps(metadata.report).decode(),
    )


def run_id() -> str:
    """The id of the run being loaded: the one its log lines are filed under."""
    # Outside run_pipeline (a sink driven by hand) there is none: a fresh one of the same form.
    return current_run_id() or random_ids.token_hex(4)


def missing_columns(
    dialect: Dialect, label: str, table: str, existing: dict[str, set[str]]
) -> None:
    """ConfigError naming the fix if a table that exists lacks a column the load writes.

    ``existing`` maps each table that exists (lower-case name) to its lower-case column names.
    """
    for name, wanted in ((table, NAMES), (RUNS_TABLE, RUN_NAMES)):
        have = existing.get(name.lower())
        if have is None:
            continue  # created by the load
        missing = [column for column in wanted if column.lower() not in have]
        if missing:
            fixes = "; ".join(dialect.add_column(name, column) for column in missing)
            other = "choose another --table, " if name == table else ""
            raise ConfigError(
                f"{label}: table {name} has no column {', '.join(missing)}: {other}or add "
                f"{'it' if len(missing) == 1 else 'them'} ({fixes})"
            )


def failure(
    label: str, doing: str, exc: BaseException, url: DatabaseUrl, hint: str = ""
) -> OutputError:
    """``<label>: cannot <doing>: <the database's reason>[ (hint)]``, every password masked."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    hint = f" ({hint})" if hint else ""
    return OutputError(f"{label}: cannot {doing}: {redact(reason, url.passwords)}{hint}")


def missing_library(scheme: str, module: str, extra: str) -> ConfigError:
    """The error for a database whose Python library is not installed."""
    return ConfigError(
        f"--db {scheme}:// needs the {module} package, which is not installed: "
        f"pip install 'customer-pipeline[{extra}]'"
    )


def file_path(url: DatabaseUrl) -> Path:
    """The database file an embedded database's URL names, as SQLAlchemy reads it.

    ``scheme:///relative/path`` is relative to the current folder, ``scheme:////abs/path``
    absolute; %XX escapes are decoded. No host, query or in-memory database.
    """
    shown = url.masked
    parts = urlsplit(url.get_secret_value())
    example = f"{url.scheme}:///relative/path or {url.scheme}:////absolute/path"
    if parts.netloc:
        raise ConfigError(f"--db {shown}: a {url.scheme} URL has no host; write {example}")
    if parts.query or parts.fragment:
        raise ConfigError(f"--db {shown}: a {url.scheme} URL takes no ?query or #fragment")
    path = unquote(parts.path)[1:]  # the first / ends the empty host
    if not path or path == ":memory:" or path.endswith("/"):
        raise ConfigError(
            f"--db {shown}: name a database file ({example}); an in-memory database would "
            "keep nothing after the run"
        )
    return Path(path)


class DatabaseSink:
    """What every database sink has: its URL (shown masked), table, mode and load count."""

    files: ClassVar[tuple[str, ...]] = ()
    transactional: ClassVar[bool] = True

    def __init__(self, context: SinkContext) -> None:
        self._url = DatabaseUrl(context.target)
        self._label = self._url.masked
        settings = context.settings
        self._table = settings.table
        self._mode = settings.db_mode
        self._timeout = settings.timeout
        self._loaded = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._label!r})"

    @property
    def label(self) -> str:
        """The URL with its password, if any, masked."""
        return self._label

    def run_incomplete(self) -> None:
        """Told before the first write that pages may be missing: replace becomes upsert.

        Replacing the table with part of the customers would drop the others; an
        incomplete run adds and updates what it has, and --resume later brings the rest.
        """
        if self._mode == "replace":
            log.warning("%s: the run is incomplete, so --db-mode replace upserts instead (the "
                        "customers this run did not see are kept)", self._label)  # fmt: skip
            self._mode = "upsert"

    def _run_row(self, metadata: RunMetadata) -> tuple[Any, ...]:
        """This run's pipeline_runs values."""
        return run_row(metadata, run_id(), self._table, self._mode)

    def _committed(self, run: tuple[Any, ...]) -> None:
        """Log the load, with the run id its pipeline_runs row has."""
        log.info("%s: %d customers loaded into %s (%s), run %s", self._label, self._loaded,
                 self._table, self._mode, run[0])  # fmt: skip


class EmbeddedSink(DatabaseSink, Generic[C]):
    """A database in a local file through a blocking driver: every call in a worker thread.

    One connection, used by one worker thread at a time, never two at once. The run's
    transaction begins at the first batch, so the database is not locked while the pages
    are fetched, and commits in ``commit``; a crash leaves the file as it was.
    """

    dialect: ClassVar[Dialect]
    begin: ClassVar[str]  # the statement that begins the run's transaction
    errors: ClassVar[tuple[type[Exception], ...]] = (OSError,)  # the driver's, once imported

    def __init__(self, context: SinkContext) -> None:
        super().__init__(context)
        self._path = file_path(self._url)
        self._connection: C | None = None
        self._begun = False
        self._errors = self.errors

    async def open(self) -> None:
        """Open the file (created if missing) and check a table already there can be loaded."""
        self._connection = await self._call("open the database", self._connect)
        existing = await self._call("read the tables", self._existing)
        missing_columns(self.dialect, self._label, self._table, existing)

    async def write(self, batch: CustomerBatch) -> None:
        """Upsert the batch in the run's transaction, begun at the first batch."""
        await self._call("load the customers", self._write, batch)
        self._loaded += len(batch)

    async def commit(self, metadata: RunMetadata) -> None:
        """Add the pipeline_runs row and commit: the whole run appears at once."""
        run = self._run_row(metadata)
        try:
            await self._call("commit the load", self._commit, run)
        finally:
            await self.abort()
        self._committed(run)

    async def abort(self) -> None:
        """Roll back what is not committed and close the file."""
        connection, self._connection = self._connection, None
        self._begun = False
        if connection is not None:
            await anyio.to_thread.run_sync(self._close, connection)

    async def _call(self, doing: str, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread; a database error becomes an OutputError."""
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except self._errors as exc:
            # SQLite and DuckDB let one writer at a time in, and say so.
            hint = "another program is using it: try again once it is done"
            hint = hint if "lock" in str(exc).lower() else ""
            raise failure(self._label, doing, exc, self._url, hint) from None

    # -- in the worker thread ---------------------------------------------------------------

    def _connect(self) -> C:
        """A connection to the file (its folder checked first: a clearer message)."""
        if not self._path.parent.is_dir():
            raise FileNotFoundError(f"the folder {self._path.parent} does not exist")
        return self._open_file()

    def _begin(self) -> None:
        if self._begun:
            return
        self._execute(self.begin)
        self._begun = True
        self._execute(self.dialect.create_customers(self._table))
        self._execute(self.dialect.create_runs())
        if self._mode == "replace":
            self._execute(f"DELETE FROM {self._table}")

    def _write(self, batch: CustomerBatch) -> None:
        self._begin()
        self._load(batch)

    def _commit(self, run: tuple[Any, ...]) -> None:
        self._begin()
        self._execute(insert_run("?" * len(run)), self._run_values(run))
        self._execute("COMMIT")

    def _db(self) -> C:
        if self._connection is None:
            raise RuntimeError(f"{type(self).__name__} used before open() or after commit()")
        return self._connection

    # -- what each driver does its own way ---------------------------------------------------

    def _open_file(self) -> C:
        """Connect to ``self._path``."""
        raise NotImplementedError

    def _existing(self) -> dict[str, set[str]]:
        """The run's two tables that exist, lower-cased, each with its lower-cased columns."""
        raise NotImplementedError

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Run one statement."""
        raise NotImplementedError

    def _load(self, batch: CustomerBatch) -> None:
        """Upsert the batch's customers."""
        raise NotImplementedError

    def _run_values(self, run: tuple[Any, ...]) -> Sequence[Any]:
        """The pipeline_runs values as the driver takes them."""
        return run

    def _close(self, connection: C) -> None:
        """Roll back an open transaction and close."""
        raise NotImplementedError
