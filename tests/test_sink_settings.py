"""The storage settings (--format, --db, --table, --db-mode); the database password kept secret."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from customer_pipeline import ConfigError, run_pipeline, sinks
from customer_pipeline.config import load_settings
from customer_pipeline.pipeline import _sink_targets
from customer_pipeline.settings import DatabaseUrl, Settings

from .conftest import fast_settings
from .test_sinks import LinesFile, MemoryDatabase, api

PASSWORD = "pa:ss@w%2Frd"  # made up, with the characters URLs escape
DECODED = "pa:ss@w/rd"


class CarelessDatabase(MemoryDatabase):
    """A database sink that logs its whole URL, password and all, as a careless one might."""

    async def open(self) -> None:
        logging.getLogger("customer_pipeline.sinks").warning("connecting to %s", self.target)
        await super().open()

    def __init__(self, context: sinks.SinkContext) -> None:
        super().__init__(context)
        self.target = context.target


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake database (memdb://) and a fake format (lines) in the registry."""
    monkeypatch.setitem(sinks.DATABASES, "memdb", "tests.test_sink_settings:CarelessDatabase")
    monkeypatch.setitem(sinks.FORMATS, "lines", "tests.test_sinks:LinesFile")
    MemoryDatabase.tables.clear()
    MemoryDatabase.calls.clear()


def test_the_password_is_masked_in_every_repr_str_and_dump(fakes: None) -> None:
    url = DatabaseUrl(f"memdb://bob:{PASSWORD}@db.example:5432/crm")
    settings = Settings(db=[url.get_secret_value()])
    shown = [repr(url), str(url), repr(settings), str(settings),
             orjson.dumps(settings.model_dump(mode="json")).decode()]  # fmt: skip
    for text in shown:
        assert "bob:***@db.example:5432/crm" in text
        assert "pa:ss" not in text and "w%2Frd" not in text and DECODED not in text
    assert url.passwords == [PASSWORD, DECODED]  # both spellings are redacted from logs
    assert set(url.passwords) <= set(settings.secrets)
    assert DatabaseUrl("sqlite:///x.db").passwords == [] and str(DatabaseUrl("sqlite:///x.db"))


def test_formats_and_databases_come_from_flags_variables_and_the_config_file(
    fakes: None, tmp_path: Path
) -> None:
    config = tmp_path / "source.toml"
    config.write_text('format = ["json", "lines"]\ndb = ["memdb://a/"]\ntable = "clients"\n')
    from_file = load_settings(config=config, environ={})
    assert from_file.format == ("json", "lines") and from_file.table == "clients"
    assert [url.get_secret_value() for url in from_file.db] == ["memdb://a/"]
    environ = {"CUSTOMER_PIPELINE_FORMAT": "lines, json", "CUSTOMER_PIPELINE_DB": '["memdb://b/"]',
               "CUSTOMER_PIPELINE_DB_MODE": "replace"}  # fmt: skip
    from_env = load_settings(config=config, environ=environ)
    assert (from_env.format, from_env.db_mode) == (("lines", "json"), "replace")
    assert _sink_targets(from_env) == ["lines", "json", "memdb://b/"]
    flags = load_settings(config=config, environ=environ, format=("json",), db=("memdb://c/",))
    assert _sink_targets(flags) == ["json", "memdb://c/"]
    assert load_settings(environ={"CUSTOMER_PIPELINE_DB": ""}).db == ()
    assert _sink_targets(Settings()) == ["json"]  # the default: today's document only


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": ["csv"]}, r"invalid format: names 'csv'; the formats are json"),
        ({"format": []}, r"invalid format: names no format"),
        ({"db": [f"oracle://s:{PASSWORD}@h/x"]}, r"invalid db: the URL has the scheme 'oracle'"),
        ({"db": [f"memdb://u:{PASSWORD}@h:99999/x"]}, r"invalid db: the URL has a malformed host"),
        ({"db": ["memdb://a/", f"memdb:// u:{PASSWORD}@h/"]}, r"URL 2 of 2 contains a space"),
        ({"db": ["not a url"]}, r"invalid db: the URL contains a space"),
        ({"db": ["localhost/db"]}, r"is not a database URL such as duckdb:///"),
        ({"table": "customers; drop table x"}, r"invalid table: must be a plain SQL name"),
        ({"table": "Pipeline_Runs"}, r"invalid table: must not be pipeline_runs"),
        ({"db_mode": "merge"}, r"invalid db_mode: must be one of upsert, replace"),
    ],
)
def test_bad_storage_settings_are_named_without_showing_the_url(
    fakes: None, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings(**overrides)  # type: ignore[arg-type]
    assert "pa:ss" not in str(caught.value) and "w%2Frd" not in str(caught.value)


async def test_a_run_writes_every_chosen_sink_and_never_shows_the_password(
    fakes: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"memdb://crm:{PASSWORD}@h/"
    settings = fast_settings(output_dir=tmp_path, format=["json", "lines"], db=[url])
    with api({"version": 1}):
        result = await run_pipeline(settings)
    assert result.customers == 6
    assert sorted(MemoryDatabase.tables["crm:pa:ss@w%2Frd@h"]) == [1, 2, 3, 4, 5, 6]
    document = orjson.loads((tmp_path / "processed_customers.json").read_bytes())["customers"]
    lines = (tmp_path / "processed_customers.lines").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == document
    log = (tmp_path / "pipeline.log").read_text()
    assert "connecting to memdb://crm:" in log  # the careless line, logged redacted
    written = [p.read_bytes() for p in tmp_path.iterdir() if p.is_file()]
    for text in [*written, capsys.readouterr().err.encode()]:
        assert b"pa:ss" not in text and b"w%2Frd" not in text and DECODED.encode() not in text
    report = orjson.loads((tmp_path / "summary_report.json").read_bytes())
    assert report["run"]["settings"]["db"] == ["memdb://crm:***@h/"]
    assert LinesFile.files[0] in {p.name for p in tmp_path.iterdir()}


def test_settings_being_built_never_show_a_raw_key_or_password_in_their_repr() -> None:
    # Until __post_init__ converts them, the fields hold what was given: plain strings. A
    # traceback with locals (pytest -l, rich) shows ``self`` then.
    half_built = Settings.__new__(Settings)
    given = {"api_key": "sk-raw-key", "db": (f"postgresql://u:{PASSWORD}@h/d",),
             "cache": f"redis://:{PASSWORD}@h:6379/0"}  # fmt: skip
    for name, value in given.items():
        object.__setattr__(half_built, name, value)
    shown = repr(half_built)
    assert "sk-raw-key" not in shown and "pa:ss" not in shown and "w%2Frd" not in shown
    assert "postgresql://u:***@h/d" in shown
