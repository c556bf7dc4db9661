"""``postgresql://user:pass@host:port/db``: the customers upserted into a PostgreSQL table.

Also ``postgres://`` and ``postgresql+asyncpg://``; query parameters are asyncpg's (e.g.
``?sslmode=require``). Needs asyncpg (``customer-pipeline[postgres]``), imported in ``open``,
which connects, so a wrong password or an unreachable server fails the run before any
request. ``quality_issues`` is ``text[]``, the run's report ``jsonb``.

The load: at the first batch one transaction begins, with a TEMP staging table; each batch
is COPYed into it (binary COPY, the fastest way in); ``commit`` moves it all into the table
with one ``INSERT ... SELECT ... ON CONFLICT (customer_id) DO UPDATE`` (rows that did not
change are left alone), adds the pipeline_runs row and commits. A crash, or a lost
connection, rolls all of it back on the server. PostgreSQL text cannot hold a NUL
character: one in a customer's value is stored as U+FFFD.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from ..errors import ConfigError
from . import _tables
from .base import CustomerBatch, RunMetadata, Sink, SinkContext

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")

STAGING: Final = "customer_pipeline_load"
CLOSE_TIMEOUT_S: Final = 5.0
_NUL: Final = b"\\u0000"  # how a NUL character looks in the spool's JSON


class PostgresSink(_tables.DatabaseSink):
    """One PostgreSQL database: the customers table and pipeline_runs, in one transaction."""

    def __init__(self, context: SinkContext) -> None:
        super().__init__(context)
        self._scheme, _, rest = self._url.get_secret_value().partition("://")
        self._dsn = f"postgresql://{rest}"  # asyncpg knows no driver suffix (+asyncpg)
        self._connection: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._row = operator.itemgetter(*_tables.NAMES)
        self._merge = _merge_sql(self._table)

    async def open(self) -> None:
        """Connect and check a table already there can be loaded; nothing is changed yet."""
        try:
            import asyncpg
        except ImportError:
            raise _tables.missing_library(self._scheme, "asyncpg", "postgres") from None
        self._connection = await self._connect(asyncpg)
        rows = await self._call(
            "read the tables",
            self._db().fetch,
            "SELECT lower(table_name), lower(column_name) FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND lower(table_name) = ANY($1::text[])",
            [self._table.lower(), _tables.RUNS_TABLE],
        )
        existing: dict[str, set[str]] = {}
        for table, column in rows:
            existing.setdefault(table, set()).add(column)
        _tables.missing_columns(_tables.POSTGRES, self._label, self._table, existing)

    async def write(self, batch: CustomerBatch) -> None:
        """COPY the batch into the staging table of the run's transaction."""
        await self._begin()
        records = batch.records()
        rows = [self._row(record) for record in records]
        for i, line in enumerate(batch.lines):
            if _NUL in line:  # rare: cleaned apart so the others cost one search
                rows[i] = self._row(_without_nul(records[i]))
        await self._call(
            "load the customers",
            self._db().copy_records_to_table,
            STAGING,
            records=rows,
            columns=_tables.NAMES,
        )
        self._loaded += len(rows)

    async def commit(self, metadata: RunMetadata) -> None:
        """Move the staged customers into the table, add the pipeline_runs row, commit."""
        row = self._run_row(metadata)
        placeholders = [f"${i}" for i in range(1, len(row) + 1)]
        try:
            await self._begin()
            db = self._db()
            if self._mode == "replace":
                await self._call("replace the table", db.execute, f"DELETE FROM {self._table}")
            # The one statement whose time grows with the run: --timeout per 100,000.
            seconds = self._timeout * max(1, -(-self._loaded // 100_000))
            await self._call("merge the customers", db.execute, self._merge, seconds=seconds)
            await self._call("record the run", db.execute, _tables.insert_run(placeholders), *row)
            await self._call("commit the load", self._transaction.commit)
            self._transaction = None
            with contextlib.suppress(Exception):
                await db.close(timeout=CLOSE_TIMEOUT_S)
        finally:
            await self.abort()
        self._committed(row)

    async def abort(self) -> None:
        """Drop the connection: the server rolls back what is not committed."""
        connection, self._connection = self._connection, None
        self._transaction = None
        if connection is not None and not connection.is_closed():
            connection.terminate()  # at once: a close would wait on a server that may hang

    async def _connect(self, asyncpg: Any) -> asyncpg.Connection:
        """A connection, or the error that says what to fix."""
        fix = "check the user and password in --db"
        config = {
            asyncpg.InvalidPasswordError: fix,
            asyncpg.InvalidAuthorizationSpecificationError: fix,
            asyncpg.InvalidCatalogNameError: "create the database first, or fix its name in --db",
            asyncpg.ClientConfigurationError: "fix --db",
        }
        try:
            connection: asyncpg.Connection = await asyncpg.connect(
                self._dsn, timeout=self._timeout
            )
            return connection
        except tuple(config) as exc:
            hint = next(h for kind, h in config.items() if isinstance(exc, kind))
            error = _tables.failure(self._label, "connect", exc, self._url, hint)
            raise ConfigError(str(error)) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            hint = "is PostgreSQL running there, and are the host and port in --db right?"
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no answer within {self._timeout:g} s (--timeout)")
            raise _tables.failure(self._label, "connect", exc, self._url, hint) from None

    async def _begin(self) -> None:
        """Begin the run's transaction and its staging table, once."""
        if self._transaction is not None:
            return
        db = self._db()

        async def start() -> Any:
            # transaction() itself raises when the server dropped the idle connection.
            transaction = db.transaction()
            await transaction.start()
            return transaction

        self._transaction = await self._call("begin the load", start)
        for statement in (
            _tables.POSTGRES.create_customers(self._table),
            _tables.POSTGRES.create_runs(),
            f"CREATE TEMP TABLE {STAGING} ({_tables.POSTGRES.column_defs(constraints=False)}) "
            "ON COMMIT DROP",
        ):
            await self._call("prepare the load", db.execute, statement)

    def _db(self) -> asyncpg.Connection:
        if self._connection is None:
            raise RuntimeError("PostgresSink used before open() or after commit()/abort()")
        return self._connection

    async def _call(
        self,
        doing: str,
        function: Callable[..., Awaitable[T]],
        *args: Any,
        seconds: float | None = None,
        **kwargs: Any,
    ) -> T:
        """``await function(*args, **kwargs)`` within ``seconds`` (default --timeout); a
        database error or a server that stops answering becomes an OutputError."""
        import asyncpg

        limit = self._timeout if seconds is None else seconds
        try:
            with anyio.fail_after(limit):
                return await function(*args, **kwargs)
        except TimeoutError:
            exc = TimeoutError(f"no answer within {limit:g} s (--timeout)")
            raise _tables.failure(self._label, doing, exc, self._url) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _tables.failure(self._label, doing, exc, self._url) from None


def _merge_sql(table: str) -> str:
    """The move from the staging table into ``table``; a row that did not change is not touched."""
    source = f"SELECT {', '.join(_tables.NAMES)} FROM {STAGING}"
    now = ", ".join(f"{table}.{name}" for name in _tables.NAMES)
    new = ", ".join(f"excluded.{name}" for name in _tables.NAMES)
    return f"{_tables.upsert(table, source)} WHERE ({now}) IS DISTINCT FROM ({new})"


def _without_nul(customer: dict[str, Any]) -> dict[str, Any]:
    """The customer with every NUL character, which PostgreSQL text refuses, as U+FFFD."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return {name: clean(value) for name, value in customer.items()}


if TYPE_CHECKING:  # the port's shape, checked by mypy
    _IS_A_SINK: type[Sink] = PostgresSink
