"""Hostile servers, bad settings and bad disk states, run through the real command line.

Each case runs ``python -m customer_pipeline run`` in a subprocess against a scripted loopback
server (tests/hostile_server.py), and asserts the documented exit code, a message that says
what happened, and that no line of stdout, stderr or any file written contains a Python
traceback or the API key.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import SECRET_KEY
from .hostile_server import (
    Reply,
    bare_array,
    dribble,
    gzip_bomb,
    hostile_server,
    html_page,
    json_page,
    listing,
    redirect,
    short_body,
    user,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def three_pages(bad: Reply | None = None, *, total_pages: Any = 3) -> dict[int, Reply]:
    """Three pages of two users; page 2 answers ``bad`` when given."""
    pages = {n: listing([user(2 * n - 1), user(2 * n)], total_pages=total_pages) for n in (1, 2, 3)}
    if bad is not None:
        pages[2] = bad
    return pages


def deep_record_page(depth: int) -> Reply:
    """One good user and one whose id is nested ``depth`` lists deep (too deep for orjson)."""
    deep = b"[" * depth + b'"deep"' + b"]" * depth
    good = orjson.dumps(user(1))
    return Reply(body=b'{"total_pages": 1, "data": [' + good + b', {"id": ' + deep + b"}]}")


@dataclass
class Case:
    """One row: what the server answers, what the user types, what the folder holds."""

    name: str
    exit_code: int
    says: str = ""  # a piece of the output (stdout + stderr) that must be there
    pages: dict[int, Reply] | None = None  # None: no server; the URL is a closed port
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None
    check: Callable[[Path], None] | None = None


def not_sqlite(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".checkpoint.sqlite3").write_bytes(b"this is not a database" * 100)


def checkpoint_is_a_folder(folder: Path) -> None:
    (folder / ".checkpoint.sqlite3").mkdir(parents=True)


def dotenv_not_utf8(folder: Path) -> None:
    (folder.parent / ".env").write_bytes(b"CUSTOMER_PIPELINE_SEED=4\xff2\n")


def output_dir_is_a_file(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file, not a folder")


def setting_below_field_table(folder: Path) -> None:
    (folder.parent / "source.toml").write_text('[field]\nid = "id"\nconcurrency = 0\n')


def export(folder: Path) -> Any:
    return orjson.loads((folder / "processed_customers.json").read_bytes())


def customers(folder: Path) -> list[int]:
    return [c["customer_id"] for c in export(folder)["customers"]]


def incomplete_with(reason: str, ids: list[int]) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        meta = export(folder)["metadata"]
        assert meta["complete"] is False
        assert any(reason in r for r in meta["incomplete_reasons"]), meta["incomplete_reasons"]
        assert customers(folder) == ids

    return check


def complete_with(ids: list[int]) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert export(folder)["metadata"]["complete"] is True
        assert customers(folder) == ids

    return check


def rejected_with(reason: str, ids: list[int]) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        lines = (folder / "rejected_records.jsonl").read_bytes().splitlines()
        reasons = [orjson.loads(line)["reason"] for line in lines]
        assert any(reason in r for r in reasons), reasons
        assert customers(folder) == ids

    return check


ALL = [1, 2, 3, 4, 5, 6]
WIDE_ID = b'{"total_pages": 1, "data": [{"id": 100000000000000000000000000000, "email": "a@b.co"}]}'

CASES = [
    # -- hostile servers -------------------------------------------------------------------
    Case("well-behaved", EXIT_OK, "Done: 6 customers", three_pages(), check=complete_with(ALL)),
    Case("more pages than max_pages", EXIT_INCOMPLETE, "max_pages is 2",
         three_pages(), ["--max-pages", "2"],
         check=incomplete_with("the API reports 3 pages; max_pages is 2", [1, 2, 3, 4])),
    Case("a JSON array instead of the listing", EXIT_INCOMPLETE, "JSON array",
         three_pages(bare_array([user(3)])), check=incomplete_with("[2]", [1, 2, 5, 6])),
    Case("an HTML 200", EXIT_INCOMPLETE, "HTML", three_pages(html_page()),
         check=incomplete_with("[2]", [1, 2, 5, 6])),
    Case("Content-Length larger than the body", EXIT_INCOMPLETE, "",
         three_pages(short_body(b'{"data": [', 1500)),
         check=incomplete_with("[2]", [1, 2, 5, 6])),
    Case("a gzip bomb", EXIT_INCOMPLETE, "max_response_bytes",
         three_pages(gzip_bomb(50 << 20)),
         check=incomplete_with("page 2 answered more than max_response_bytes", [1, 2, 5, 6])),
    Case("a body dribbled a byte at a time", EXIT_INCOMPLETE, "",
         three_pages(dribble(listing([user(3)], total_pages=3), "body")),
         ["--timeout", "0.3"], check=incomplete_with("[2]", [1, 2, 5, 6])),
    Case("headers dribbled a byte at a time on page 1", EXIT_FAILED, "page 1 failed",
         {1: dribble(listing([user(1)], total_pages=1), "headers")}, ["--timeout", "0.3"]),
    Case("total_pages in Unicode digits", EXIT_OK, "Done",
         three_pages(total_pages="\u00b3"), check=complete_with(ALL)),
    Case("a redirect that carries the key", EXIT_FAILED, "redirect",
         {1: redirect(f"http://127.0.0.1:9/api/users?key={SECRET_KEY}")}),
    Case("a redirect on page 2", EXIT_INCOMPLETE, "No retry fixes those pages",
         three_pages(redirect("http://127.0.0.1:9/elsewhere")),
         check=incomplete_with("page 2 answered HTTP 302", [1, 2, 5, 6])),
    Case("401 from the API", EXIT_FAILED, "API key missing or invalid",
         {1: json_page({"error": "Missing API key"}, status=401)}),
    Case("503 on every attempt of page 1", EXIT_FAILED, "page 1 failed",
         {1: json_page({"error": "down"}, status=503)}),
    Case("a rejected record nested 300 levels deep", EXIT_OK, "1 rejected",
         {1: deep_record_page(300)},
         check=rejected_with("id is not an integer", [1])),
    Case("an id wider than 64 bits", EXIT_OK, "1 rejected",
         {1: Reply(body=WIDE_ID)}, check=rejected_with("larger than 2**63-1", [])),
    Case("nothing listens on the port", EXIT_FAILED, "page 1 failed", None),
    Case("an id string with a leading zero beside the same id", EXIT_OK, "1 rejected",
         {1: listing([user(18), user(18, id="018")], total_pages=1)},
         check=rejected_with("not a canonical integer string: leading zero", [18])),
    # -- bad settings ----------------------------------------------------------------------
    Case("--rate-limit inf", EXIT_USAGE, "--rate-limit", three_pages(), ["--rate-limit", "inf"]),
    Case("--rate-limit 1e-300", EXIT_USAGE, "--rate-limit", three_pages(),
         ["--rate-limit", "1e-300"]),
    Case("--timeout inf", EXIT_USAGE, "--timeout", three_pages(), ["--timeout", "inf"]),
    Case("--seed above 64 bits", EXIT_USAGE, "--seed", three_pages(), ["--seed", str(2**64)]),
    Case("--max-pages above 64 bits", EXIT_USAGE, "--max-pages", three_pages(),
         ["--max-pages", str(2**64)]),
    Case("--max-response-bytes above 64 bits", EXIT_USAGE, "--max-response-bytes",
         three_pages(), ["--max-response-bytes", str(2**64)]),
    Case("a base URL with a non-numeric port", EXIT_USAGE, "--base-url", three_pages(),
         ["--base-url", "http://127.0.0.1:port"]),
    Case("a base URL with a control character", EXIT_USAGE, "--base-url", three_pages(),
         ["--base-url", "http://127.0.0.1\x07"]),
    Case("a base URL with a query", EXIT_USAGE, "--base-url", three_pages(),
         ["--base-url", "http://127.0.0.1/?a=1"]),
    Case("a base URL with a fragment", EXIT_USAGE, "--base-url", three_pages(),
         ["--base-url", "http://127.0.0.1/#top"]),
    Case("an API key ending in CR", EXIT_USAGE, "line break", three_pages(),
         env={"CUSTOMER_PIPELINE_API_KEY": SECRET_KEY + "\r"}),
    Case("an API key with a non-ASCII character", EXIT_USAGE, "non-ASCII", three_pages(),
         env={"CUSTOMER_PIPELINE_API_KEY": SECRET_KEY + "\u00e9"}),
    Case("--page-param with a space", EXIT_USAGE, "--page-param", three_pages(),
         ["--page-param", "a b"]),
    Case("--page-param the same as --size-param", EXIT_USAGE,
         "page_param and size_param name the same query parameter", three_pages(),
         ["--page-param", "per_page"]),
    Case("a setting below the [field] table of --config", EXIT_USAGE,
         "key concurrency on line 3 of source.toml is inside the [field] table", three_pages(),
         ["--config", "source.toml"], prepare=setting_below_field_table),
    Case("an unknown flag", EXIT_USAGE, "error: No such option", three_pages(), ["--frobnicate"]),
    Case("--resume with --restart", EXIT_USAGE, "error:", three_pages(),
         ["--resume", "--restart"]),
    # -- disk states -----------------------------------------------------------------------
    Case("a .env that is not UTF-8", EXIT_USAGE, "not UTF-8", three_pages(),
         prepare=dotenv_not_utf8),
    Case("a checkpoint that is not SQLite", EXIT_USAGE, "--restart discards it", three_pages(),
         prepare=not_sqlite),
    Case("a checkpoint that is not SQLite, with --restart", EXIT_OK, "Done", three_pages(),
         ["--restart"], prepare=not_sqlite, check=complete_with(ALL)),
    Case("a folder at the checkpoint path, with --restart", EXIT_OK, "Done", three_pages(),
         ["--restart"], prepare=checkpoint_is_a_folder, check=complete_with(ALL)),
    Case("the output folder is a file", EXIT_USAGE, "--output-dir", three_pages(),
         prepare=output_dir_is_a_file),
    Case("a log file that cannot be written", EXIT_OK, "cannot write the log file",
         three_pages(), ["--log-file", "/dev/full"], check=complete_with(ALL)),
]  # fmt: skip


async def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "customer_pipeline", "run", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, output.decode("utf-8", "replace")


def closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_cli_exits_as_documented_with_no_traceback(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    (tmp_path / "work").mkdir()
    if case.prepare is not None:
        case.prepare(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMER_PIPELINE_")}
    env |= {"CUSTOMER_PIPELINE_API_KEY": SECRET_KEY, **case.env}
    args = ["--output-dir", str(out), "--no-progress", "--rate-limit", "0", "--max-retries",
            "1", "--backoff-base", "0.01", "--backoff-max", "0.02", "--concurrency", "2",
            "--transport", "httpx", *case.args]  # fmt: skip
    if case.pages is None:
        code, output = await run_cli(["--base-url", closed_port(), *args], env, tmp_path / "work")
    else:
        async with hostile_server(case.pages, interval=0.05) as url:
            code, output = await run_cli(["--base-url", url, *args], env, tmp_path / "work")
    assert code == case.exit_code, output
    assert case.says in output, output
    assert "Traceback" not in output, output
    assert SECRET_KEY not in output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert b"Traceback" not in text, path
            assert SECRET_KEY.encode() not in text, path
    if case.check is not None:
        case.check(out)
