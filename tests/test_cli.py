"""The customer-pipeline command: help, exit codes, the offline run, the schema."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from customer_pipeline import Settings
from customer_pipeline.cli import main

from .conftest import SECRET_KEY
from .helpers import simulator_process


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
    # Plain log lines, no bar: the one retry the seeded simulator causes (a 500 on page 1).
    assert report["api"]["retries"] == 1 and report["api"]["failures_by_status"] == {"500": 1}
    assert proc.stderr.count(": retry ") == 1 and "page 1: retry 1 in" in proc.stderr


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


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rate-limit", "inf"], "rate_limit"),
        (["--rate-limit", "1e-300"], "rate_limit"),
        (["--timeout", "inf"], "timeout"),
        (["--seed", str(2**64)], "seed"),
        (["--max-pages", str(2**64)], "max_pages"),
        (["--max-response-bytes", str(2**64)], "max_response_bytes"),
        (["--base-url", "http://127.0.0.1:80a"], "base_url"),
        (["--base-url", "http://127.0.0.1/?page=2"], "base_url"),
    ],
)
def test_out_of_bounds_setting_exits_2_before_anything_is_written(
    args: list[str], named: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", *args, "--output-dir", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: invalid {named} (--{named.replace('_', '-')} / ")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_a_dotenv_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"CUSTOMER_PIPELINE_SEED=\xff\n")
    result = CliRunner().invoke(main, ["run", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot read .env: ")
    assert "(not UTF-8)" in result.output and "Traceback" not in result.output


def test_a_bad_verify_tls_variable_names_the_insecure_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER_PIPELINE_VERIFY_TLS", "perhaps")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2
    assert "--insecure / CUSTOMER_PIPELINE_VERIFY_TLS" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--concurrenc", "3"], "error: No such option '--concurrenc'"),
        (["run", "--concurrency", "many"], "error: Invalid value for '--concurrency'"),
        (["fetch"], "error: No such command 'fetch'"),
        (["simulate", "--failure-rate", "nan"], "error: Invalid value for '--failure-rate'"),
        (["simulate", "--latency-ms", "inf"], "error: Invalid value for '--latency-ms'"),
    ],
)
def test_usage_errors_are_lower_case_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Error:" not in result.output and "Traceback" not in result.output
    assert "--help" in result.output  # still says where the help is


def test_simulate_on_a_busy_port_exits_2_naming_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["simulate", "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "--port" in result.output and "Traceback" not in result.output


def test_an_unexpected_failure_is_one_error_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from customer_pipeline import pipeline

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"internal state lost near {SECRET_KEY}")

    monkeypatch.setattr(pipeline, "run_pipeline", broken)
    result = CliRunner().invoke(
        main, ["run", "--api-key", SECRET_KEY, "--output-dir", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: unexpected RuntimeError: internal state lost near ***")
    assert "Traceback" not in result.output and SECRET_KEY not in result.output


@pytest.mark.parametrize(
    ("style", "flags"),
    [("page_number", ""), ("cursor", " --paginator cursor --next-path meta.next_cursor")],
)
def test_simulate_prints_the_run_command_that_matches_it(
    tmp_path: Path, style: str, flags: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "customer_pipeline", "simulate", "--port", "0", "--per-page",
         "50", "--total", "120", "--failure-rate", "0", "--latency-ms", "0", "--api-key",
         SECRET_KEY, "--pagination", style],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        banner = []
        while len(banner) < 10 and "Ctrl-C" not in (banner or [""])[-1]:
            banner.append(proc.stderr.readline())
        command = next(line.strip() for line in banner if "customer-pipeline run" in line)
        assert command == f"customer-pipeline run --base-url {url} --per-page 50{flags}"
        assert any("CUSTOMER_PIPELINE_API_KEY" in line for line in banner)
        assert not any(SECRET_KEY in line for line in banner)
        env = {"CUSTOMER_PIPELINE_API_KEY": SECRET_KEY}
        result = CliRunner(env=env).invoke(
            main, [*command.split()[1:], "--output-dir", str(tmp_path), "--no-progress"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert result.exit_code == 0, result.output
    report = orjson.loads((tmp_path / "summary_report.json").read_bytes())
    assert report["api"]["requests"] == 3  # 120 users in 3 pages of 50, as served


# Run the console script the way its launcher does (import the target, call it), with a
# SIGINT sent by the process to itself at one point of start-up.
INTERRUPTED_START = r"""
import importlib, importlib.abc, os, signal, sys, tomllib

where, *args = sys.argv[1:]
kind, _, name = where.partition(":")


def interrupt():
    os.kill(os.getpid(), signal.SIGINT)


class Trap(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == name:
            sys.meta_path.remove(self)
            interrupt()
        return None


def profile(frame, event, arg):
    code = frame.f_code
    if event == "call" and f"{code.co_filename}:{code.co_name}".endswith(name):
        sys.setprofile(None)
        interrupt()


if kind == "import":
    sys.meta_path.insert(0, Trap())
with open("pyproject.toml", "rb") as f:
    target = tomllib.load(f)["project"]["scripts"]["customer-pipeline"]
module, _, attr = target.partition(":")
sys.argv = ["customer-pipeline", *args]
if kind == "call":
    sys.setprofile(profile)
sys.exit(getattr(importlib.import_module(module), attr)())
"""


@pytest.mark.parametrize(
    "where",
    [
        "import:click",  # the first import of the command line
        "import:aiohttp",  # the HTTP stack, deep in the package's imports
        "call:config.py:load_settings",
        "call:cli.py:_run",  # the event loop runs, its signal handlers are not in place yet
    ],
)
def test_ctrl_c_during_start_up_exits_130_quietly(where: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_START, where, "run", "--base-url",
         "http://127.0.0.1:9", "--max-retries", "0", "--output-dir", str(tmp_path / "out"),
         "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "Aborted" not in proc.stderr


def test_log_lines_under_the_progress_bar_carry_iso_8601_times(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--insecure", "--base-url", f"http://127.0.0.1:{free_port()}", "--max-retries",
         "0", "--output-dir", str(tmp_path), "--progress"],
    )  # fmt: skip
    lines = result.output.splitlines()
    line = next(line for line in lines if line.rstrip().endswith("verification is OFF"))
    assert re.search(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\]", line), line
    assert not re.search(r"\d{2}/\d{2}/\d{2}", result.output)


def test_no_command_shows_the_help_not_an_error() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2
    assert result.output.startswith("Usage: ") and "Commands:" in result.output
    assert "error:" not in result.output


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The settings `run` would run with; nothing is fetched."""
    from customer_pipeline import cli

    seen: list[Any] = []

    async def no_run(settings: Any, **kwargs: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(cli, "_run", no_run)
    return seen


def test_every_source_setting_has_its_flag(captured: list[Any]) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--resource", "/v1/customers", "--paginator", "cursor", "--page-param", "p",
         "--size-param", "limit", "--first-page", "0", "--offset-param", "skip",
         "--cursor-param", "after", "--data-path", "", "--total-pages-path", "meta.pages",
         "--total-path", "meta.count", "--next-path", "meta.next_cursor",
         "--field", "id=uid", "--field", "email = contact.email"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.resource, s.paginator, s.page_param, s.size_param, s.first_page) == (
        "/v1/customers", "cursor", "p", "limit", 0
    )  # fmt: skip
    assert (s.offset_param, s.cursor_param, s.data_path) == ("skip", "after", "")
    assert (s.total_pages_path, s.total_path, s.next_path) == ("meta.pages", "meta.count",
                                                               "meta.next_cursor")  # fmt: skip
    assert s.field == {"id": "uid", "email": "contact.email"}
    flags = {f"--{name.replace('_', '-')}" for name in Settings.model_fields} - {"--verify-tls"}
    assert flags <= {opt for param in run_command().params for opt in param.opts}


def run_command() -> Any:
    return main.commands["run"]  # type: ignore[attr-defined]


def test_the_paginator_choices_are_the_settings_ones() -> None:
    from typing import get_args

    from customer_pipeline.settings import Paginator

    param = next(p for p in run_command().params if p.name == "paginator")
    assert tuple(param.type.choices) == get_args(Paginator)


@pytest.mark.parametrize("value", ["email", "=contact.email", ""])
def test_a_field_flag_without_name_and_path_exits_2(value: str, captured: list[Any]) -> None:
    result = CliRunner().invoke(main, ["run", "--field", value])
    assert result.exit_code == 2
    assert "error: Invalid value for '--field': expects NAME=PATH" in result.output
    assert captured == []


def test_run_help_shows_a_source_per_style_and_the_precedence() -> None:
    text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "--paginator link --data-path '' --page-param _page --size-param _limit" in text
    assert "--page-param _page --size-param _per_page --total-pages-path pages" in text
    assert "--paginator cursor --next-path meta.next_cursor" in text
    words = " ".join(text.split())
    assert "highest first: flags, CUSTOMER_PIPELINE_<NAME> environment variables" in words
    assert "a .env file in the working folder, the --config TOML file (keys" in words
    assert "a [field] table for the field map), the defaults." in words


def test_a_config_file_is_read_and_flags_override_it(
    tmp_path: Path, captured: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "source.toml"
    config.write_text('resource = "/users"\nseed = 5\nper_page = 7\n[field]\nid = "uid"\n')
    config.chmod(0o600)
    monkeypatch.setenv("CUSTOMER_PIPELINE_PER_PAGE", "8")
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--seed", "6"])
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.resource, s.seed, s.per_page, s.field) == ("/users", 6, 8, {"id": "uid"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed = \n", "error: cannot read {config}: not valid TOML: "),
        ("sed = 5\n", "error: unknown key sed in {config} (line 1): did you mean seed?"),
        ('seed = "five"\n', "error: invalid seed in {config} (line 1, key seed): "),
    ],
)
def test_a_bad_config_file_exits_2_naming_it(
    tmp_path: Path, captured: list[Any], text: str, message: str
) -> None:
    config = tmp_path / "source.toml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.startswith(message.format(config=config)), result.output
    assert "Traceback" not in result.output and captured == []


def test_a_config_file_holding_the_key_for_all_to_read_is_warned_about(
    tmp_path: Path, captured: list[Any]
) -> None:
    config = tmp_path / "source.toml"
    config.write_text(f'api_key = "{SECRET_KEY}"\n')
    config.chmod(0o644)
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 0
    assert f"warning: {config} holds api_key and others can read it (mode 0644)" in result.output
    assert SECRET_KEY not in result.output
    assert captured[0].api_key.get_secret_value() == SECRET_KEY


def test_a_source_in_one_toml_file_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "source.toml"
    with simulator_process(
        "--failure-rate", "0", "--latency-ms", "0", "--rate-limit", "0", "--total", "30",
        "--per-page", "5", "--api-key", SECRET_KEY,
    ) as url:  # fmt: skip
        config.write_text(
            f'base_url = "{url}"\napi_key = "{SECRET_KEY}"\nper_page = 5\nrate_limit = 0\n'
            f'output_dir = "{out}"\n'
        )
        config.chmod(0o600)
        result = CliRunner().invoke(main, ["run", "--config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Done: 30 customers" in result.output and SECRET_KEY not in result.output
    assert orjson.loads((out / "summary_report.json").read_bytes())["api"]["requests"] == 6


def imports_of(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the command in a fresh interpreter; the modules it imported (``-X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "customer_pipeline", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    return proc, {line.rpartition("|")[2].strip() for line in lines if line.startswith("import")}


def loaded(names: set[str], *packages: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in packages)}


NEVER_FOR_A_PLAIN_RUN = (
    "rich", "pygments", "customer_pipeline.simulator", "aiohttp.web", "customer_pipeline.models",
    "pydantic", "dotenv", "tomllib",
)  # fmt: skip


def test_a_plain_run_imports_only_what_it_needs(tmp_path: Path) -> None:
    with simulator_process("--failure-rate", "0", "--latency-ms", "0", "--rate-limit", "0") as url:
        proc, names = imports_of(
            "run", "--base-url", url, "--rate-limit", "0", "--no-progress", cwd=tmp_path
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"aiohttp", "httpx", "customer_pipeline.pipeline"} <= names  # it did run
    assert loaded(names, *NEVER_FOR_A_PLAIN_RUN) == set()


def test_help_imports_no_http_stack_and_no_pydantic(tmp_path: Path) -> None:
    proc, names = imports_of("run", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "click" in names
    heavy = ("httpx", "aiohttp", "anyio", "pydantic", "rich", "customer_pipeline.pipeline")
    assert loaded(names, *heavy) == set()


def test_a_signal_after_the_run_is_over_does_not_change_its_exit_code() -> None:
    # The summary is printed, the exit is near: a SIGTERM now must not make it 143, which
    # says "stopped, checkpoint kept" of a run that finished and deleted its checkpoint.
    code = """
import asyncio, os, signal
from customer_pipeline.console import Stopper

async def main():
    stopper = Stopper()
    stopper.install()
    stopper.uninstall()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0)

asyncio.run(main())
raise SystemExit(7)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr


def test_running_the_command_in_process_leaves_the_signal_handlers_as_they_were(
    tmp_path: Path,
) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    result = CliRunner().invoke(
        main, ["run", "--simulate", "--output-dir", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert {sig: signal.getsignal(sig) for sig in before} == before
