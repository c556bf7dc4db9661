"""json-server from npm, started for real: fixtures and the facts of its paging API.

Install both lines with ``scripts/install-json-server`` (into
``${XDG_CACHE_HOME:-~/.cache}/customer-pipeline/json-server-<line>``, or under
``$PIPELINE_TESTS_JSON_SERVER_DIR``). Missing, they skip their tests; with
``PIPELINE_TESTS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail them instead.

Facts, measured with node 20.20 on a db.json of ``{"users": [...]}`` with 50 records whose ids
are the integers 1..50, in file order (tests/test_jsonserver.py checks the ones marked *):

0.17.4 (the npm ``latest`` tag; express; node >= 12)
- * ``GET /users?_page=N&_limit=M`` answers a bare JSON array of records N; ``_limit``
  defaults to 10. ``_per_page`` is not a parameter: it is ignored (10 records come back)
  but echoed into the links.
- * ``X-Total-Count: 50`` (the record count) whenever ``_page``, ``_limit`` or ``_end`` is given.
- * ``Link`` (RFC 8288) with ``rel`` ``first``, ``prev`` (not on page 1), ``next`` (not on
  the last page) and ``last``; absolute URLs built from the request's ``Host`` header, every
  other query parameter kept: ``<http://127.0.0.1:P/users?_page=2&_limit=10>; rel="next"``.
- * A page past the end answers ``[]`` with an empty ``Link:`` header; ``X-Total-Count`` stays.
- * Ids come back as they are in the file (integers here).
- ``_page=0`` or below is served as page 1, but every link then says ``_page=0``.
- Offsets: ``_start=S&_limit=M`` or ``_start=S&_end=E`` slice the array (``X-Total-Count``, no
  ``Link``). No parameters: the whole array, no paging headers.
- * A query parameter that no record has as a key (``page``, ``per_page``) is ignored; one that
  a record has (``first_name=F3``) filters.
- Start: ``json-server --port P --host H db.json`` (``-p``, ``-H``); binds H. It prints a banner
  ending in ``Type s + enter ...`` right after calling listen, before the port is bound, so
  readiness is an answered request, not a line. ``--watch`` (``-w``) reloads the file on
  change; without it the file is read once. ``--quiet`` (``-q``) silences the banner and the
  request log. Address in use: ``Cannot bind to the port P`` and exit 1.
- An unknown path answers 404 ``{}``.

1.0.0-beta.15 (the 1.0 beta line; tinyhttp; declares node >= 22.12, runs on node 20.20)
- * ``GET /users?_page=N&_per_page=M`` answers an envelope ``{"first": 1, "prev": N-1 or
  null, "next": N+1 or null, "last": pages, "pages": pages, "items": 50, "data": [...]}``;
  ``_per_page`` defaults to 10. No ``Link``, no ``X-Total-Count``.
- * Ids are strings: integer ids in the file are turned into strings when it is read
  (``"1"``..``"50"``), and records without an id get a random string one.
- * A page past the end is clamped: it answers the last page again (``next`` null).
  ``_page=0`` is clamped to page 1.
- * Every query parameter other than ``_page``, ``_per_page``, ``_sort``, ``_embed`` and
  ``_where`` is a filter on the record key of that name: ``per_page=10`` or ``_limit=5``
  match no record and give ``{"items": 0, "data": []}``. A paginator must send nothing else.
  (``_start``/``_end``/``_limit`` are gone: no offset paging.)
- No ``_page``: the whole bare array. ``_sort=id`` sorts the string ids as strings.
- Start: ``json-server --port P db.json`` prints ``JSON Server started on PORT :P`` once
  listening. ``--host``/``-h`` only changes the printed URLs: it listens on every interface,
  so the fixture preloads a few lines of JS that bind a server without a host to 127.0.0.1.
  It watches db.json and reloads it on change (``--watch`` is accepted and redundant) unless
  ``NODE_ENV=production``, which also makes it crash at start when ``./public`` is missing.
- An unknown path answers 404 ``{"error": "Not Found"}``.

1.0.0-beta.0 to beta.3 (node >= 18.3) differ: ``_limit`` there returns the first M records
as a bare array whatever ``_page`` says, and unknown parameters are not filters.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

# The releases the tests are written against; scripts/install-json-server pins the same.
PINNED = {"0.17": "0.17.4", "1.0": "1.0.0-beta.15"}
INSTALL_HINT = "run scripts/install-json-server"
REQUIRE_SERVICES = "PIPELINE_TESTS_REQUIRE_SERVICES"
DIR_OVERRIDE = "PIPELINE_TESTS_JSON_SERVER_DIR"
# Node starts json-server in well under a second; a loaded 2-core CI box can take several.
START_DEADLINE = 30.0
POLL_INTERVAL = 0.05
START_ATTEMPTS = 3

# json-server 1.0 calls listen(port) without a host, i.e. on every interface, whatever --host
# says; this preload fills in the loopback address so a test server is never exposed.
LOOPBACK_PRELOAD = """\
const net = require("node:net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || /^[0-9]+$/.test(String(args[0]))) {
    if (args[1] === undefined) args[1] = "127.0.0.1";
    else if (typeof args[1] === "function") args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
"""


class JsonServerError(RuntimeError):
    """json-server was installed but did not come up; the message carries its log."""


def cache_root() -> Path:
    """The folder holding one ``json-server-<line>`` npm prefix per line."""
    override = os.environ.get(DIR_OVERRIDE)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "customer-pipeline"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail where services are required, so CI never silently skips."""
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def find_json_server(line: str) -> Path:
    """The pinned json-server script of ``line`` ("0.17" or "1.0"), or skip/fail with the fix."""
    prefix = cache_root() / f"json-server-{line}" / "node_modules"
    script = prefix / ".bin" / "json-server"
    try:
        version = json.loads((prefix / "json-server" / "package.json").read_bytes())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        version = None
    if version is None or not script.exists():
        unavailable(f"json-server {line} not installed: {INSTALL_HINT}")
    if version != PINNED[line]:
        pin = PINNED[line]
        unavailable(f"json-server {line} is {version}, not the pinned {pin}: {INSTALL_HINT}")
    if shutil.which("node") is None:
        unavailable(f"json-server {line} needs node on PATH: install Node.js 20+, {INSTALL_HINT}")
    return script


def make_users(count: int = 50) -> list[dict[str, Any]]:
    """Reqres-shaped users with ids 1..count; every 10th has a bad email, every 7th no last name."""
    return [
        {
            "id": i,
            "email": f"user{i}.example.com" if i % 10 == 0 else f"user{i}@example.com",
            "first_name": f"First{i}",
            "last_name": "" if i % 7 == 0 else f"Last{i}",
            "avatar": f"https://example.com/faces/{i}.png",
        }
        for i in range(1, count + 1)
    ]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_command(script: Path, workdir: Path) -> list[str]:
    """``node`` running ``script`` with the loopback preload written into ``workdir``."""
    preload = workdir / "loopback.cjs"
    preload.write_text(LOOPBACK_PRELOAD)
    return ["node", "--require", str(preload), str(script)]


@contextlib.contextmanager
def serve(
    command: Sequence[str],
    db: dict[str, Any],
    workdir: Path,
    *,
    deadline: float = START_DEADLINE,
    attempts: int = START_ATTEMPTS,
) -> Iterator[str]:
    """Run ``command --port P --host 127.0.0.1 db.json`` in ``workdir``; yield its base URL.

    The server runs in its own process group, which is terminated (then killed) on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "db.json").write_text(json.dumps(db, indent=2))
    for attempt in range(1, attempts + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = workdir / f"server-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*command, "--port", str(port), "--host", "127.0.0.1", "db.json"],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            if _wait_until_ready(proc, url, deadline):
                yield url
                return
            text = log_path.read_text(errors="replace")
            # Another process took the port between free_port() and the server's bind.
            if attempt < attempts and ("EADDRINUSE" in text or "Cannot bind" in text):
                continue
            state = f"exited with {proc.returncode}" if proc.returncode is not None else (
                f"did not answer on {url} within {deadline:g} s"
            )
            raise JsonServerError(f"json-server {state}; its output:\n{text}")
        finally:
            _stop(proc)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """Poll ``url`` until it answers 200 (True), the process exits or the deadline passes."""
    end = time.monotonic() + deadline
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if client.get(url + "/").status_code == 200 and proc.poll() is None:
                    return True
            if proc.poll() is not None or time.monotonic() >= end:
                return False
            # Doubles as the poll interval and returns at once if the server dies meanwhile.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_INTERVAL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group, killing it if it lingers."""
    # Once reaped, the group id may belong to someone else: signal only an unreaped leader.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def json_server_db() -> dict[str, Any]:
    """The db.json the json_server_* fixtures serve; override this fixture to serve other data."""
    return {"users": make_users(50)}


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[Callable[[str, dict[str, Any]], str]]:
    """Start json-server of a line ("0.17" or "1.0") on a db; all stop when the test ends."""
    with contextlib.ExitStack() as stack:
        started = 0

        def start(line: str, db: dict[str, Any]) -> str:
            nonlocal started
            script = find_json_server(line)
            started += 1
            workdir = tmp_path / f"json-server-{line}-{started}"
            workdir.mkdir()
            return stack.enter_context(serve(node_command(script, workdir), db, workdir))

        yield start


@pytest.fixture
def json_server_017(
    json_server: Callable[[str, dict[str, Any]], str], json_server_db: dict[str, Any]
) -> str:
    """Base URL of json-server 0.17 serving ``json_server_db``."""
    return json_server("0.17", json_server_db)


@pytest.fixture
def json_server_10(
    json_server: Callable[[str, dict[str, Any]], str], json_server_db: dict[str, Any]
) -> str:
    """Base URL of json-server 1.0 (beta) serving ``json_server_db``."""
    return json_server("1.0", json_server_db)
