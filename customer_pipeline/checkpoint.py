"""The run's checkpoint: every completed page, durably, so a killed run can resume.

An SQLite file in the output folder (WAL journal, so what is committed survives ``kill -9``
at any moment). Pages are committed in small groups, every COMMIT_EVERY_S: one commit per
page cost more than the request itself on a fast API, and a kill loses at most the last
group, which a resumed run simply fetches again. It holds the raw page bodies as the API
sent them and the settings that shape the result, never the API key. A resumed run replays
the recorded pages through the same stages and fetches only the others, so it writes exactly
what an uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import orjson

from .errors import CheckpointError
from .paging import Page, parse_envelope
from .settings import Settings

log = logging.getLogger("customer_pipeline.checkpoint")

CHECKPOINT_FILE: Final = ".checkpoint.sqlite3"
SCHEMA_VERSION: Final = 1
COMMIT_EVERY_S: Final = 0.05
# The settings that change which customers come out, or their values.
FINGERPRINT_FIELDS: Final = ("base_url", "per_page", "seed")


def fingerprint(settings: Settings) -> dict[str, object]:
    """What a checkpoint must agree with to be resumed (never the key)."""
    values = {name: getattr(settings, name) for name in FINGERPRINT_FIELDS}
    return {"schema": SCHEMA_VERSION, **values}


class Checkpoint:
    """Completed pages of one run, recorded as they arrive."""

    def __init__(self, path: Path, connection: sqlite3.Connection, resumed: bool) -> None:
        self.path = path
        self.resumed = resumed
        self._db = connection
        self._open_transaction = False
        self._last_commit = time.monotonic()

    @classmethod
    def open(cls, settings: Settings, *, resume: bool = False, restart: bool = False) -> Checkpoint:
        """Start a new checkpoint, or reopen the last one with ``resume``.

        Raises CheckpointError when an unfinished run's checkpoint is in the way (neither
        ``resume`` nor ``restart``) or when it was made with settings that change the result.
        """
        folder = settings.output_dir
        path = folder / CHECKPOINT_FILE
        exists = path.exists()
        if exists and restart:
            remove_files(path)
            exists = False
        if exists and not resume:
            raise CheckpointError(
                f"{path} holds an unfinished run: pass --resume to continue it, or --restart "
                "to discard it and start over"
            )
        folder.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS pages (number INTEGER PRIMARY KEY, body BLOB)")
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot use the checkpoint {path}: {exc}") from exc
        checkpoint = cls(path, db, resumed=exists)
        checkpoint._check_fingerprint(settings)
        if exists:
            log.info("resuming: %d pages already recorded in %s", len(checkpoint), path)
        elif resume:
            log.info("--resume: no checkpoint in %s, starting from the first page", folder)
        return checkpoint

    def _check_fingerprint(self, settings: Settings) -> None:
        wanted = fingerprint(settings)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('fingerprint', ?)", (orjson.dumps(wanted).decode(),)
            )
            return
        recorded = orjson.loads(row[0])
        changed = [k for k in wanted if recorded.get(k) != wanted[k]]
        if changed:
            self.close()
            details = ", ".join(f"{k} was {recorded.get(k)!r}, now {wanted[k]!r}" for k in changed)
            raise CheckpointError(
                f"cannot resume {self.path}: {details}. That would change the result; resume "
                "with the same settings, or pass --restart to start over"
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM pages").fetchone()[0])

    def done(self) -> set[int]:
        """Numbers of the pages already recorded."""
        return {number for (number,) in self._db.execute("SELECT number FROM pages")}

    def record(self, page: Page) -> None:
        """Record one completed page; committed within COMMIT_EVERY_S."""
        if not self._open_transaction:
            self._db.execute("BEGIN")
            self._open_transaction = True
        self._db.execute("INSERT OR REPLACE INTO pages VALUES (?, ?)", (page.number, page.body))
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        """Make every recorded page durable now."""
        if self._open_transaction:
            self._db.execute("COMMIT")
            self._open_transaction = False
        self._last_commit = time.monotonic()

    def replay(self, per_page: int) -> Iterator[Page]:
        """The recorded pages, by number, parsed again from their bodies."""
        rows = self._db.execute("SELECT number, body FROM pages ORDER BY number")
        for number, body in rows:
            records, total_pages = parse_envelope(body, url=f"checkpoint page {number}",
                                                  per_page=per_page)  # fmt: skip
            yield Page(number, records, total_pages, body)

    def close(self) -> None:
        """Commit what is recorded and close."""
        with contextlib.suppress(sqlite3.Error):
            self.commit()
            self._db.close()

    def discard(self) -> None:
        """Close and delete: the run it belonged to is finished."""
        self.close()
        remove_files(self.path)


def remove_files(path: Path) -> None:
    """Delete an SQLite file and its WAL companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
