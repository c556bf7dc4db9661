"""Run logging: every spelling of the key redacted, one log per run, a broken log file survived."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from customer_pipeline import run_pipeline
from customer_pipeline.cli import main
from customer_pipeline.logs import LOGGER_NAME, RedactingFilter, current_run_id, redact, run_logging

from .conftest import SECRET_KEY, fast_settings

# A key as it arrives from a file with Windows line endings, with characters that escape.
AWKWARD_KEY = SECRET_KEY + "/+é\r"


@pytest.mark.parametrize(
    "spelling",
    [
        AWKWARD_KEY,
        repr(AWKWARD_KEY)[1:-1],  # str repr: ...\r
        ascii(AWKWARD_KEY)[1:-1],  # ...\xe9\r
        repr(AWKWARD_KEY.encode())[2:-1],  # bytes repr: ...\xc3\xa9\r, as h11 reports a header
        json.dumps(AWKWARD_KEY)[1:-1],  # ...\u00e9\r
        json.dumps(AWKWARD_KEY, ensure_ascii=False)[1:-1],
        quote(AWKWARD_KEY, safe=""),  # ...%2F%2B%C3%A9%0D
        re.sub("%..", lambda m: m.group().lower(), quote(AWKWARD_KEY, safe="")),
        quote(AWKWARD_KEY),  # the slash kept
    ],
)
def test_every_spelling_of_the_key_is_redacted(spelling: str) -> None:
    text = redact(f"Illegal header value b'{spelling}' (see {spelling})", [AWKWARD_KEY])
    assert text == "Illegal header value b'***' (see ***)"


def test_redaction_leaves_lines_without_the_key_alone() -> None:
    assert redact("page 3: HTTP 500", [SECRET_KEY, ""]) == "page 3: HTTP 500"


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    try:
        raise ValueError(f"header b'{repr(AWKWARD_KEY)[1:-1]}' refused")
    except ValueError:
        record = logging.LogRecord(
            LOGGER_NAME, logging.ERROR, __file__, 1, "sent %s", (AWKWARD_KEY,), sys.exc_info()
        )
    assert RedactingFilter([AWKWARD_KEY]).filter(record)
    line = logging.Formatter().format(record)
    assert "sent ***" in line and "ValueError: header b'***' refused" in line
    assert SECRET_KEY not in line


async def test_concurrent_runs_each_log_their_own_lines_at_their_own_level(
    simulator: Any, tmp_path: Path
) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    level_before = logger.level
    base_a, _ = await simulator()
    base_b, _ = await simulator()
    quiet = fast_settings(base_url=base_a, output_dir=tmp_path / "a", log_level="ERROR")
    chatty = fast_settings(base_url=base_b, output_dir=tmp_path / "b", log_level="INFO")
    await asyncio.gather(run_pipeline(quiet), run_pipeline(chatty))
    log_a = (tmp_path / "a" / "pipeline.log").read_text()
    log_b = (tmp_path / "b" / "pipeline.log").read_text()
    assert log_a == ""  # nothing at ERROR, and none of B's INFO lines
    assert f"source={base_b}" in log_b and "run complete" in log_b  # A's ERROR silenced nothing
    assert base_a not in log_b
    assert logger.level == level_before


async def test_each_run_has_its_own_short_run_id(tmp_path: Path) -> None:
    seen: dict[str, str | None] = {}

    async def one(name: str) -> None:
        with run_logging(tmp_path / f"{name}.log", "INFO", []):
            await asyncio.sleep(0)
            seen[name] = current_run_id()
            logging.getLogger(f"{LOGGER_NAME}.test").info("line of %s", name)

    assert current_run_id() is None
    await asyncio.gather(one("a"), one("b"))
    assert seen["a"] and seen["b"] and seen["a"] != seen["b"]
    assert len(seen["a"]) <= 12
    assert (tmp_path / "a.log").read_text().count("line of") == 1
    assert "line of a" in (tmp_path / "a.log").read_text()
    assert current_run_id() is None


def test_a_lower_level_set_by_the_application_is_kept_during_a_run(tmp_path: Path) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    try:
        with run_logging(tmp_path / "x.log", "WARNING", []):
            assert logger.level == logging.DEBUG
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(logging.NOTSET)


FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full here")


@needs_dev_full
def test_an_unwritable_log_file_warns_once_and_never_raises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with run_logging(FULL, "INFO", []):
        for n in range(3):
            logging.getLogger(f"{LOGGER_NAME}.test").warning("line %d", n)
    err = capsys.readouterr().err
    assert err == (
        "warning: cannot write the log file /dev/full: No space left on device; "
        "further log lines are dropped\n"
    )


@needs_dev_full
def test_log_file_on_a_full_disk_keeps_the_data_and_the_exit_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--simulate", "--output-dir", str(tmp_path), "--log-file", str(FULL),
         "--backoff-base", "0.01", "--max-retries", "10", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "processed_customers.json").exists()
    assert "Logging error" not in result.output and "Traceback" not in result.output
    assert result.output.count("warning: cannot write the log file /dev/full") == 1


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` as the JSON object it must be."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_time_level_logger_run_id_and_fields_and_mask_the_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.log"
    with run_logging(path, "INFO", [AWKWARD_KEY], "json"):
        run_id = current_run_id()
        log = logging.getLogger(f"{LOGGER_NAME}.client")
        log.warning("key %s in a message", AWKWARD_KEY,
                    extra={"page": 3, "status": 503, "attempt": 2, "wait_s": 0.25,
                           "unit": f"page {AWKWARD_KEY}"})  # fmt: skip
        try:
            raise ValueError(AWKWARD_KEY)
        except ValueError:
            log.exception("failed")
    text = path.read_text()
    assert SECRET_KEY not in text
    first, second = json_lines(text)
    assert set(first) == {"time", "level", "logger", "message", "run_id", "page", "status",
                          "attempt", "wait_s", "unit"}  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert (first["level"], first["logger"]) == ("WARNING", "customer_pipeline.client")
    assert first["message"] == "key *** in a message" and first["unit"] == "page ***"
    assert (first["page"], first["status"], first["attempt"], first["wait_s"]) == (3, 503, 2, 0.25)
    assert first["run_id"] == run_id and len(run_id or "") == 8
    assert second["message"] == "failed" and "ValueError: ***" in second["exception"]


async def test_a_json_run_logs_objects_with_the_report_run_id(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=60, failure_rate=0.4, api_key=SECRET_KEY)
    settings = fast_settings(base_url=base, output_dir=tmp_path, log_format="json")
    result = await run_pipeline(settings)
    lines = json_lines((tmp_path / "pipeline.log").read_text())
    run_id = result.report["run"]["run_id"]
    assert run_id and {line["run_id"] for line in lines} == {run_id}
    retries = [line for line in lines if "retry" in line["message"]]
    assert retries and all({"attempt", "wait_s", "unit"} <= set(line) for line in retries)
    assert any(line.get("status") in (500, 503) for line in retries)
    assert SECRET_KEY not in (tmp_path / "pipeline.log").read_text()


def test_json_log_lines_on_stderr_too(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "run", "--simulate", "--output-dir", str(tmp_path), "--no-progress",
        "--log-format", "json", "--log-level", "INFO",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    objects = json_lines("\n".join(
        line for line in result.stderr.splitlines() if line.startswith("{")
    ))  # fmt: skip
    assert any(o["message"].startswith("run started") for o in objects)
    assert all(o["logger"].startswith("customer_pipeline") and o["run_id"] for o in objects)
