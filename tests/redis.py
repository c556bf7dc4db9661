"""A real redis-server for the tests: started on a free loopback port, stopped after.

Install it with ``apt-get install redis-server`` (Debian's package, Redis 7). Missing, its
tests skip; with ``PIPELINE_TESTS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail.
Never fakeredis: the Lua scripts, key expiry and a dump of what Redis holds are the point.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .jsonserver import unavailable

INSTALL_HINT = "apt-get install redis-server"
START_DEADLINE = 20.0


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process of a test: its URL, a CLI, a dump, and a way to kill it."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable(f"redis-server not installed: {INSTALL_HINT}")
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(folder),
                "--save", "", "--appendonly", "no", "--logfile", str(self.log),
                "--repl-diskless-sync-delay", "0"]  # else a --rdb dump waits 5 s
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_DEADLINE
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text() if self.log.exists() else ""
                pytest.fail(f"redis-server did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.02)

    def cli(self, *args: str) -> str:
        """``redis-cli`` against this server; its output, stripped ("" when it fails)."""
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout.strip()

    def dump(self) -> bytes:
        """Everything Redis holds, as an RDB file made by ``redis-cli --rdb``."""
        target = self.folder / "dump-by-cli.rdb"
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--rdb", str(target)],
            capture_output=True,
            timeout=30,
            check=True,
        )
        return target.read_bytes()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or an OOM kill would."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop it if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (skips, or fails in CI, without the binary)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
