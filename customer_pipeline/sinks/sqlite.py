"""``sqlite:///path.db``: the customers upserted into a table of a SQLite file (stdlib sqlite3).

URLs follow SQLAlchemy: ``sqlite:///relative/path.db`` from the current folder,
``sqlite:////absolute/path.db``. SQLite has no list or time types: ``quality_issues`` is a
JSON array as text (``'["email:invalid"]'``, read it with ``json_each`` or ``->>``), the
pipeline_runs times are ISO 8601 text and ``complete`` is 0 or 1.

The run's transaction begins with ``BEGIN IMMEDIATE`` (SQLite's write lock) at the first
batch; a crash leaves the file as it was (SQLite's journal rolls it back). Each batch is one
``executemany``, in a worker thread: 200,000 customers take about 2 s.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from . import _tables
from .base import CustomerBatch, Sink, SinkContext


class SqliteSink(_tables.EmbeddedSink[sqlite3.Connection]):
    """One SQLite file: the customers table and pipeline_runs, loaded in one transaction."""

    dialect: ClassVar[_tables.Dialect] = _tables.SQLITE
    begin: ClassVar[str] = "BEGIN IMMEDIATE"
    errors: ClassVar[tuple[type[Exception], ...]] = (sqlite3.Error, OSError)

    def __init__(self, context: SinkContext) -> None:
        super().__init__(context)
        marks = ", ".join("?" * len(_tables.NAMES))
        self._insert = _tables.upsert(self._table, f"VALUES ({marks})")
        self._row = _row_maker()

    def _open_file(self) -> sqlite3.Connection:
        # Checked now, before any request, rather than found at the first write.
        path, folder = self._path, self._path.parent
        writable = os.access(path, os.W_OK) if path.exists() else True
        if not (writable and os.access(folder, os.W_OK)):  # the journal is a file beside it
            raise PermissionError(f"no permission to write {path} and its journal beside it")
        # isolation_level=None: the transaction is ours (BEGIN ... COMMIT), not sqlite3's.
        return sqlite3.connect(
            path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )

    def _existing(self) -> dict[str, set[str]]:
        tables: dict[str, set[str]] = {}
        for name in (self._table, _tables.RUNS_TABLE):
            columns = self._db().execute(f"PRAGMA table_info({name})").fetchall()
            if columns:
                tables[name.lower()] = {str(column[1]).lower() for column in columns}
        return tables

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        self._db().execute(sql, parameters)

    def _load(self, batch: CustomerBatch) -> None:
        self._db().executemany(self._insert, [self._row(record) for record in batch.records()])

    def _run_values(self, run: tuple[Any, ...]) -> Sequence[Any]:
        return [value.isoformat() if isinstance(value, datetime) else value for value in run]

    def _close(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:
                connection.rollback()
        with contextlib.suppress(sqlite3.Error):
            connection.close()


def _row_maker() -> Callable[[dict[str, Any]], list[Any]]:
    """A function from a customer to its row: the columns in order, lists as JSON text."""
    values = operator.itemgetter(*_tables.NAMES)
    lists = [i for i, column in enumerate(_tables.COLUMNS) if column.kind == "list"]
    dumps = orjson.dumps

    def row(customer: dict[str, Any]) -> list[Any]:
        cells = list(values(customer))
        for i in lists:
            cells[i] = dumps(cells[i]).decode()
        return cells

    return row


if TYPE_CHECKING:  # the port's shape, checked by mypy
    _IS_A_SINK: type[Sink] = SqliteSink
