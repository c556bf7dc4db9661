"""PostgreSQL started for real: a throwaway cluster (initdb + pg_ctl) and a fresh database per test.

The binaries come from PATH, else from ``/usr/lib/postgresql/<newest>/bin`` (where Debian's
``apt-get install postgresql`` puts them). Missing, the tests that need them skip; with
``PIPELINE_TESTS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail instead.

One cluster per session, in a temp folder, on a free loopback port, no Unix socket, fsync
off (nothing here tests durability against a power cut), stopped and deleted at the end.
The server refuses to run as root: as root it runs as the ``postgres`` user that the
package creates. The superuser ``postgres`` logs in without a password (trust, loopback
only); every other role needs its password (scram-sha-256), so a test can use a wrong one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from .jsonserver import free_port, unavailable

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "apt-get install postgresql"
SERVER_USER = "postgres"  # the OS user Debian's package creates, for running it as root
START_ATTEMPTS = 3
HBA = """\
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""
CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 40
shared_buffers = 32MB
"""


def find_bin_dir() -> Path:
    """The folder holding initdb and pg_ctl, or skip/fail naming the install command."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    unavailable(f"PostgreSQL's initdb and pg_ctl not found: {INSTALL_HINT}")


@dataclass
class PostgresCluster:
    """A running throwaway cluster on 127.0.0.1:``port``."""

    port: int
    _names: Iterator[int]

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        """A postgresql:// URL for ``database`` as ``user``."""
        login = quote(user, safe="")
        if password is not None:
            login += ":" + quote(password, safe="")
        return f"postgresql://{login}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg connection as the superuser, in autocommit."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        )

    def create_database(self, owner: str = "postgres") -> str:
        """A new empty database owned by ``owner``; its name."""
        name = f"test_{next(self._names)}"
        with self.connect() as admin:
            admin.execute(f'CREATE DATABASE {name} OWNER "{owner}"')
        return name

    def create_role(self, password: str) -> str:
        """A new login role with this password; its name."""
        from psycopg import sql

        name = f"role_{next(self._names)}"
        with self.connect() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        return name


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` as the server's OS user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        unavailable(f"running as root, PostgreSQL needs a '{SERVER_USER}' user: {INSTALL_HINT}")
    return ["runuser", "-u", SERVER_USER, "--", *command]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def cluster() -> Iterator[PostgresCluster]:
    """initdb a cluster in a temp folder, start it on a free port; stop and delete it after."""
    bin_dir = find_bin_dir()
    try:
        import psycopg  # noqa: F401  (the tests read the database back with it)
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[test]'")
    # Not pytest's tmp_path: its folders are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="customer-pipeline-pg-"))
    data, log = root / "data", root / "server.log"
    try:
        if os.geteuid() == 0:
            _as_server_user([])  # skips, or fails, when there is no such user
            user = pwd.getpwnam(SERVER_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], "initdb")  # fmt: skip
        (data / "pg_hba.conf").write_text(HBA)
        base_conf = (data / "postgresql.conf").read_text()
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            (data / "postgresql.conf").write_text(base_conf + CONF.format(port=port))
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                      "start"], "pg_ctl start")  # fmt: skip
                break
            except RuntimeError as exc:
                text = log.read_text(errors="replace") if log.exists() else ""
                if attempt < START_ATTEMPTS and "already in use" in text:
                    continue  # another process took the port between free_port() and bind
                raise RuntimeError(f"{exc}\nserver log:\n{text}") from None
        try:
            yield PostgresCluster(port, itertools.count(1))
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                 "pg_ctl stop")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster (started on first use)."""
    with cluster() as running:
        yield running


@pytest.fixture
def postgres(postgres_cluster: PostgresCluster) -> tuple[PostgresCluster, str]:
    """The cluster and a fresh empty database in it, for this test."""
    return postgres_cluster, postgres_cluster.create_database()
