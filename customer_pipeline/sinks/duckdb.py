"""``duckdb:///path.duckdb``: the customers upserted into a table of a DuckDB file.

URLs follow SQLAlchemy: ``duckdb:///relative/path.duckdb`` from the current folder,
``duckdb:////absolute/path.duckdb``. Needs the duckdb package (``customer-pipeline[duckdb]``),
imported in ``open``. ``quality_issues`` is a ``VARCHAR[]``, the run's report ``JSON``.

Each batch goes in as the JSON lines the spool already holds, read by DuckDB's own
``read_json`` from a scratch file (unlinked, read through ``/proc/self/fd``: Linux): 200,000
customers take about 1 s, where ``executemany`` takes minutes (8,192 took 23 s) and a list
parameter per column over 3 s. One transaction per run, begun at the first batch; a crash
leaves the file as it was.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from . import _tables
from .base import CustomerBatch, Sink

if TYPE_CHECKING:
    import duckdb


class DuckDbSink(_tables.EmbeddedSink["duckdb.DuckDBPyConnection"]):
    """One DuckDB file: the customers table and pipeline_runs, loaded in one transaction."""

    dialect: ClassVar[_tables.Dialect] = _tables.DUCKDB
    begin: ClassVar[str] = "BEGIN TRANSACTION"

    async def open(self) -> None:
        """Import duckdb, then open the file (DuckDB locks it) and check a table already there."""
        try:
            import duckdb
        except ImportError:
            raise _tables.missing_library("duckdb", "duckdb", "duckdb") from None
        self._errors = (duckdb.Error, OSError)
        await super().open()

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        return duckdb.connect(str(self._path))

    def _existing(self) -> dict[str, set[str]]:
        rows = self._db().execute(
            "SELECT lower(table_name), lower(column_name) FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND lower(table_name) IN (?, ?)",
            [self._table.lower(), _tables.RUNS_TABLE],
        ).fetchall()
        tables: dict[str, set[str]] = {}
        for table, column in rows:
            tables.setdefault(table, set()).add(column)
        return tables

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        self._db().execute(sql, list(parameters))

    def _load(self, batch: CustomerBatch) -> None:
        # A new file for each batch, gone once read: DuckDB may cache a file by its name, and
        # only a kill during this very call leaves one behind.
        # Unlinked from the start and read through /proc/self/fd: a kill -9 leaves no copy of
        # the customers in the temp folder.
        with tempfile.TemporaryFile(prefix="customer-pipeline-", suffix=".jsonl") as scratch:
            scratch.write(b"\n".join(batch.lines))
            scratch.flush()
            path = Path(f"/proc/self/fd/{scratch.fileno()}")
            self._execute(_read_json_upsert(self._table, path))

    def _close(self, connection: duckdb.DuckDBPyConnection) -> None:
        with contextlib.suppress(Exception):  # closing rolls back an open transaction
            connection.close()


# A customer line may be as long as a response body allows (twice, with full_name): DuckDB's
# 16 MB default would fail the whole load on one long name.
MAX_LINE_BYTES: Final = 2**31 - 1


def _read_json_upsert(table: str, path: Path) -> str:
    """The upsert of the customers in the JSON-lines file at ``path``."""
    types = ", ".join(f"'{c.name}': '{_tables.DUCKDB.types[c.kind]}'" for c in _tables.COLUMNS)
    quoted = str(path).replace("'", "''")
    source = (f"SELECT {', '.join(_tables.NAMES)} FROM read_json('{quoted}', "
              f"format = 'newline_delimited', columns = {{{types}}}, "
              f"maximum_object_size = {MAX_LINE_BYTES})")  # fmt: skip
    return _tables.upsert(table, source)


if TYPE_CHECKING:  # the port's shape, checked by mypy
    _IS_A_SINK: type[Sink] = DuckDbSink
