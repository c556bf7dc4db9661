"""What the independent tester of storage found, each fixed: a password in the URL's query,
replace mode on an incomplete run, a PostgreSQL server that stops answering, DuckDB and one
long customer, reserved words as table names, a world-readable config with a password."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from customer_pipeline import ConfigError, OutputError, run_pipeline
from customer_pipeline.config import load_settings
from customer_pipeline.settings import DatabaseUrl, Settings
from customer_pipeline.sinks import CustomerBatch, SinkContext
from customer_pipeline.sinks.duckdb import DuckDbSink
from customer_pipeline.sinks.postgres import PostgresSink
from customer_pipeline.writer import RunOutputs

from .conftest import fast_settings
from .helpers import pages_api
from .test_db_sinks import Database, database, exported, same, versioned_api  # noqa: F401


def test_a_password_in_the_query_is_masked_and_redacted() -> None:
    url = DatabaseUrl("postgresql://etl@h:5432/crm?sslmode=require&password=Hunter2+x")
    assert url.masked == "postgresql://etl@h:5432/crm?sslmode=require&password=***"
    assert set(url.passwords) == {"Hunter2+x", "Hunter2 x"}
    settings = Settings(db=[url.get_secret_value()])
    assert "Hunter2" not in repr(settings) + orjson.dumps(settings.model_dump(mode="json")).decode()
    assert "Hunter2+x" in settings.secrets


async def test_replace_on_an_incomplete_run_keeps_the_customers_it_did_not_see(
    database: Database,  # noqa: F811
    tmp_path: Path,
) -> None:
    with pages_api(set(), total_pages=4):
        await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url]))
    assert len(database.customers()) == 24
    with pages_api(failing={3}, total_pages=4):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, db=[database.url],
                                                  db_mode="replace", max_retries=0))  # fmt: skip
    assert result.exit_code == 3
    rows = database.customers()
    assert len(rows) == 24  # page 3's customers (13..18) kept from the first run, not dropped
    by_id = {row["customer_id"]: row for row in rows}
    same([by_id[c["customer_id"]] for c in exported(tmp_path)], exported(tmp_path))
    assert database.runs()[-1]["db_mode"] == "upsert"
    assert "replace upserts instead" in (tmp_path / "pipeline.log").read_text()


async def test_a_postgres_call_that_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    settings = fast_settings(output_dir=tmp_path, timeout=0.05,
                             db=["postgresql://u:pw@127.0.0.1:1/db"])  # fmt: skip
    sink = PostgresSink(SinkContext(settings.db[0].get_secret_value(), RunOutputs(tmp_path, ()),
                                    settings))  # fmt: skip
    with pytest.raises(OutputError, match=r"cannot merge.*no answer within 0.05 s") as caught:
        await sink._call("merge the customers", asyncio.Event().wait)
    assert "pw" not in str(caught.value).replace("postgresql://u:***", "")


async def test_duckdb_loads_a_customer_longer_than_its_16_mb_default(tmp_path: Path) -> None:
    with pages_api(set(), total_pages=1):
        await run_pipeline(fast_settings(output_dir=tmp_path / "json"))
    customer = exported(tmp_path / "json")[0]
    customer["first_name"] = "N" * 17_000_000
    settings = fast_settings(output_dir=tmp_path, db=[f"duckdb:///{tmp_path / 'c.duckdb'}"])
    sink = DuckDbSink(SinkContext(settings.db[0].get_secret_value(), RunOutputs(tmp_path, ()),
                                  settings))  # fmt: skip
    await sink.open()
    try:
        await sink.write(CustomerBatch([orjson.dumps(customer)]))
    finally:
        await sink.abort()


@pytest.mark.parametrize("table", ["order", "User", "select"])
def test_a_reserved_word_is_no_table_name(table: str) -> None:
    with pytest.raises(ConfigError, match="invalid table: is an SQL reserved word"):
        Settings(table=table)


def test_a_config_file_others_can_read_with_a_database_password_is_warned_about(
    tmp_path: Path,
) -> None:
    config = tmp_path / "source.toml"
    config.write_text('db = ["postgresql://etl:Hunter2@h/crm"]\n')
    config.chmod(0o644)
    warnings: list[str] = []
    load_settings(config=config, environ={}, warn=warnings.append, db=None)
    [warning] = warnings
    assert "a password in db" in warning and "chmod 600" in warning and "Hunter2" not in warning
    config.chmod(0o600)
    warnings.clear()
    load_settings(config=config, environ={}, warn=warnings.append)
    assert warnings == []
