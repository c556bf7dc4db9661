"""The customer-pipeline command: help, exit codes, the offline run, the schema."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from customer_pipeline.cli import main

from .conftest import SECRET_KEY


@pytest.mark.parametrize("command", [[], ["run"], ["simulate"], ["schema"]])
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--concurrency", "0"], "concurrency"),
        (["--rate-limit", "-2"], "rate_limit"),
        (["--base-url", "ftp://x"], "base_url"),
    ],
)
def test_bad_setting_exits_2_naming_it(args: list[str], named: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", *args, "--output-dir", str(out)])
    assert result.exit_code == 2
    assert named in result.output
    assert not out.exists()  # refused before anything was done


def test_bad_setting_from_the_environment_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER_PIPELINE_PER_PAGE", "many")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2 and "CUSTOMER_PIPELINE_PER_PAGE" in result.output


def test_unknown_flag_exits_2() -> None:
    assert CliRunner().invoke(main, ["run", "--concurrenc", "3"]).exit_code == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_api_exits_1_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main,
        ["run", "--base-url", url, "--max-retries", "1", "--backoff-base", "0.01",
         "--output-dir", str(tmp_path), "--no-progress", "--api-key", SECRET_KEY],
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{url}/api/users" in result.output
    assert SECRET_KEY not in result.output


def test_run_simulate_writes_every_output_offline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "customer_pipeline", "run", "--simulate", "--output-dir",
         str(tmp_path), "--backoff-base", "0.01", "--max-retries", "10", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Done: 12 customers" in proc.stdout
    doc = orjson.loads((tmp_path / "processed_customers.json").read_bytes())
    assert doc["customers"][0]["full_name"] == "George Bluth"
    report = orjson.loads((tmp_path / "summary_report.json").read_bytes())
    assert report["counts"]["unique_customers"] == 12
    assert "run complete" in (tmp_path / "pipeline.log").read_text()
    assert "retry" in proc.stderr or report["api"]["retries"] == 0  # plain log lines, no bar


def test_schema_prints_the_export_json_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "ExportDocument"
    assert "Customer" in schema["$defs"]
    assert "customer_tier" in schema["$defs"]["Customer"]["properties"]


@pytest.mark.parametrize("flag", ["--output-dir", "--log-file"])
def test_unusable_output_folder_or_log_file_exits_2_naming_it(tmp_path: Path, flag: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / ("x.log" if flag == "--log-file" else "out")
    result = CliRunner().invoke(
        main,
        ["run", flag, str(target), "--output-dir" if flag == "--log-file" else "--seed",
         str(tmp_path / "out") if flag == "--log-file" else "1", "--base-url",
         f"http://127.0.0.1:{free_port()}", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot" in result.output and str(blocker) in result.output
    assert "Traceback" not in result.output
