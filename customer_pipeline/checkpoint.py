"""The run's checkpoint: every completed unit, durably, so a killed run can resume.

An SQLite file in the output folder (WAL journal, so what is committed survives ``kill -9``
at any moment). One row per unit of the walk: its number, the request state that fetches it
again (a chain's cursor or URL; none where the number says it all), the response headers its
paginator reads (a Link header) and the body as the API sent it. Units are committed in small
groups by a timer, within COMMIT_EVERY_S of the first unit of the group: one commit per unit
cost more than the request itself on a fast API, and waiting for the next unit to commit would
leave a unit before a stall uncommitted. A kill
loses at most the last group, which a resumed run simply fetches again. It holds the raw bodies
and the settings that shape the result, never the API key; a run kept after it finished is
marked complete. A resumed run replays the recorded units through the same stages and fetches
only the others (a chain goes on from its last recorded unit), so it writes exactly what an
uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final, Literal, get_args

import anyio
import orjson

from .errors import CheckpointError, ConfigError, InvalidBodyError, OutputError
from .logs import spellings
from .settings import Settings
from .sources import Page

log = logging.getLogger("customer_pipeline.checkpoint")

RunMode = Literal["new", "resume", "restart"]
"""How a run treats a checkpoint left in its folder: refuse an unfinished one, continue it, or
discard it. A checkpoint kept after a complete run never blocks a new run."""
RUN_MODES: Final = get_args(RunMode)
CHECKPOINT_FILE: Final = ".checkpoint.sqlite3"
# A cluster run's shards keep their own checkpoints here, one folder each (cluster/task.py);
# they belong to the folder's checkpoint and go when it goes.
SHARDS_DIR: Final = ".shards"
SCHEMA_VERSION: Final = 2
COMMIT_EVERY_S: Final = 0.05
# The settings that change which customers come out, or their values.
FINGERPRINT_FIELDS: Final = (
    "base_url", "per_page", "seed", "resource", "paginator", "page_param", "size_param",
    "first_page", "offset_param", "cursor_param", "data_path", "total_pages_path",
    "total_path", "next_path", "field",
)  # fmt: skip
COLUMNS: Final = {"meta": ["key", "value"], "units": ["number", "state", "headers", "body"]}
Reread = Callable[[int, str | None, dict[str, str] | None, bytes], Page]
"""Reads a recorded unit again: (number, state, headers, body) -> its page; raises
InvalidBodyError or ValueError for a row that is not a unit of the walk."""


def check_mode(mode: str) -> None:
    """Refuse a mode that is not a RunMode (a typo would otherwise mean "new")."""
    if mode not in RUN_MODES:
        raise ConfigError(f"mode must be one of {', '.join(RUN_MODES)}, not {mode!r}")


def fingerprint(settings: Settings) -> dict[str, object]:
    """What a checkpoint must agree with to be resumed (never the key)."""
    values = {name: getattr(settings, name) for name in FINGERPRINT_FIELDS}
    return {"schema": SCHEMA_VERSION, **values}


def _connect(path: Path) -> sqlite3.Connection:
    """The checkpoint's connection (tests wrap it to fill the disk)."""
    return sqlite3.connect(path, isolation_level=None)


def unreadable(path: Path, why: str) -> CheckpointError:
    """The error for a checkpoint that cannot be read as one."""
    return CheckpointError(f"checkpoint {path} is unreadable: {why}; --restart discards it")


class Checkpoint:
    """Completed units of one run, recorded as they arrive."""

    def __init__(self, path: Path, connection: sqlite3.Connection, resumed: bool) -> None:
        self.path = path
        self.resumed = resumed
        self.complete = False
        self.total_pages: int | None = None
        self.commit_every_s = COMMIT_EVERY_S
        self._db = connection
        self._open_transaction = False
        self._last_commit = time.monotonic()
        self._recorded: anyio.Event | None = None  # set while a committer waits for a page
        self._fingerprint: dict[str, object] = {}
        self._masks: list[tuple[bytes, bytes]] = []  # (a spelling of the key, its stand-in)

    def hide(self, secret: str) -> None:
        """Store every spelling of ``secret`` (the API key) as a stand-in, read back as it was.

        A server may echo the key into a next URL, a cursor or a body: the checkpoint keeps
        those to resume, and the key must reach no file. Reading a row puts the key back.
        """
        forms = sorted((f for f in spellings(secret) if f), key=len, reverse=True) if secret else []
        self._masks = [(form.encode("utf-8", "surrogatepass"),
                        f"{{{{customer-pipeline:api-key:{i}}}}}".encode())
                       for i, form in enumerate(forms)]  # fmt: skip

    def _masked(self, data: bytes) -> bytes:
        for form, stand_in in self._masks:
            data = data.replace(form, stand_in)
        return data

    def _unmasked(self, data: bytes) -> bytes:
        for form, stand_in in self._masks:
            data = data.replace(stand_in, form)
        return data

    def _masked_text(self, text: str | None) -> str | None:
        if text is None or not self._masks:
            return text
        return self._masked(text.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")

    def _unmasked_text(self, text: str | None) -> str | None:
        if text is None or not self._masks:
            return text
        return self._unmasked(text.encode("utf-8", "surrogatepass")).decode(
            "utf-8", "surrogatepass"
        )

    @classmethod
    def open(cls, settings: Settings, mode: RunMode = "new") -> Checkpoint:
        """Start a new checkpoint, or reopen the last one with ``mode="resume"``.

        Raises CheckpointError when an unfinished run's checkpoint is in the way (mode
        ``"new"``), when it was made with settings that change the result, or when it is
        unreadable; ``"restart"`` discards whatever is there.
        """
        check_mode(mode)
        path = settings.output_dir / CHECKPOINT_FILE
        if mode == "restart":
            discard_path(path)
        elif path.exists() or path.is_symlink():
            checkpoint = cls._reopen(path)
            if checkpoint is None:
                log.info("discarding an empty checkpoint (a run killed as it began): %s", path)
                discard_path(path)
            elif mode == "resume":
                checkpoint._check_fingerprint(settings)
                state = "a finished run" if checkpoint.complete else "an unfinished run"
                log.info("resuming %s: %d pages recorded in %s", state, len(checkpoint), path)
                checkpoint.hide(settings.api_key.get_secret_value())
                return checkpoint
            elif not checkpoint.complete:
                checkpoint.close()
                raise CheckpointError(
                    f"{path} holds an unfinished run: pass --resume to continue it, or "
                    "--restart to discard it and start over"
                )
            else:
                log.info("discarding the checkpoint of a finished run: %s", path)
                checkpoint.discard()
        elif mode == "resume":
            log.info("--resume: no checkpoint in %s, starting from the first page", path.parent)
        created = cls._create(path, settings)
        created.hide(settings.api_key.get_secret_value())
        return created

    @classmethod
    def _create(cls, path: Path, settings: Settings) -> Checkpoint:
        path.parent.mkdir(parents=True, exist_ok=True)
        db: sqlite3.Connection | None = None
        try:
            # Made here first, so a folder that refuses it says why (SQLite: "unable to open").
            path.touch(mode=0o644)  # what SQLite would give it
            db = _connect(path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # One transaction, so a kill never leaves a checkpoint without its fingerprint.
            db.execute("BEGIN")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE units (number INTEGER PRIMARY KEY, state TEXT, headers TEXT, "
                "body BLOB)"
            )
            db.execute(
                "INSERT INTO meta VALUES ('fingerprint', ?)",
                (orjson.dumps(fingerprint(settings)).decode(),),
            )
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            # Best effort: a read-only mount refuses even to unlink a file that is not there.
            with contextlib.suppress(OSError):
                remove_files(path)
            raise create_failed(path, exc) from None
        return cls(path, db, resumed=False)

    @classmethod
    def _reopen(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at ``path``, checked to be one of ours; None if it holds nothing."""
        if path.is_dir():
            raise unreadable(path, "it is a folder, not an SQLite file")
        try:
            db = _connect(path)
        except sqlite3.Error as exc:
            raise unreadable(path, str(exc)) from None
        checkpoint = cls(path, db, resumed=True)
        try:
            if not db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                checkpoint.close()  # no table at all: killed before its first commit
                return None
            checkpoint._read_meta()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            checkpoint.close()
            raise unreadable(path, str(exc)) from None
        except CheckpointError:
            checkpoint.close()
            raise
        return checkpoint

    def _read_meta(self) -> None:
        for table, wanted in COLUMNS.items():
            columns = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if not columns:
                raise unreadable(self.path, f"it has no {table} table")
            if columns != wanted:
                raise unreadable(self.path, f"its {table} table has other columns {columns}")
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        try:
            recorded = orjson.loads(meta["fingerprint"])
        except KeyError:
            raise unreadable(self.path, "it records no run settings") from None
        except orjson.JSONDecodeError:
            raise unreadable(self.path, "its run settings are not JSON") from None
        if not isinstance(recorded, dict):
            raise unreadable(self.path, "its run settings are not a JSON object")
        if recorded.get("schema") != SCHEMA_VERSION:
            raise unreadable(
                self.path, f"it has schema {recorded.get('schema')!r}, this version reads "
                f"{SCHEMA_VERSION}"
            )  # fmt: skip
        self._fingerprint = recorded
        state = meta.get("state")
        if state not in (None, "complete"):
            raise unreadable(self.path, f"its state {str(state)[:40]!r} is unknown")
        self.complete = state == "complete"
        total = meta.get("total_pages")
        self.total_pages = int(total) if isinstance(total, str) and total.isdecimal() else None

    def _check_fingerprint(self, settings: Settings) -> None:
        wanted = fingerprint(settings)
        recorded = self._fingerprint
        changed = [k for k in wanted if recorded.get(k) != wanted[k]]
        if changed:
            self.close()
            details = ", ".join(f"{k} was {recorded.get(k)!r}, now {wanted[k]!r}" for k in changed)
            raise CheckpointError(
                f"cannot resume {self.path}: {details}. That would change the result; resume "
                "with the same settings, or pass --restart to start over"
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM units").fetchone()[0])

    def record(self, page: Page) -> None:
        """Record one completed unit; committed within COMMIT_EVERY_S."""
        headers = None if page.headers is None else orjson.dumps(dict(page.headers)).decode()
        try:
            if not self._open_transaction:
                self._db.execute("BEGIN")
                self._open_transaction = True
            self._db.execute(
                "INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?)",
                (
                    page.number,
                    self._masked_text(page.state),
                    self._masked_text(headers),
                    self._masked(page.body),
                ),
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        recorded = self._recorded
        if recorded is None:  # no committer running: commit on the way, as before
            if time.monotonic() - self._last_commit >= self.commit_every_s:
                self.commit()
        elif not recorded.is_set():
            recorded.set()

    def commit(self) -> None:
        """Make every recorded page durable now."""
        if self._open_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failed(exc) from None
            self._open_transaction = False
        self._last_commit = time.monotonic()

    @contextlib.asynccontextmanager
    async def committing(self) -> AsyncIterator[None]:
        """While the body runs, commit each page within ``commit_every_s`` of its arrival."""
        async with anyio.create_task_group() as group:
            self._recorded = anyio.Event()
            group.start_soon(self._commit_after_a_while)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._recorded = None
        self.commit()

    async def _commit_after_a_while(self) -> None:
        while self._recorded is not None:
            await self._recorded.wait()
            await anyio.sleep(self.commit_every_s)
            # A fresh event before the commit: a page recorded from here on starts a new group.
            self._recorded = anyio.Event()
            self.commit()

    def _failed(self, exc: sqlite3.Error) -> OutputError:
        """Roll back the open group (what was committed stays) and say what to do."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        self._open_transaction = False
        return write_failed(self.path, exc)

    def mark_complete(self, total_pages: int | None) -> None:
        """Record that the run finished, so a new run discards it and --resume only replays."""
        self.commit()
        rows = [("state", "complete"), ("total_pages", str(total_pages or ""))]
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise write_failed(self.path, exc) from None
        self.complete = True
        self.total_pages = total_pages

    def replay(self, reread: Reread) -> Iterator[Page]:
        """The recorded units, by number, read again by ``reread`` (the source's)."""
        try:
            rows = self._db.execute(
                "SELECT number, state, headers, body FROM units ORDER BY number"
            )
            for number, state, headers, body in rows:
                yield self._reread(reread, number, state, headers, body)
        except sqlite3.Error as exc:
            raise unreadable(self.path, str(exc)) from None

    def _reread(self, reread: Reread, number: Any, state: Any, headers: Any, body: Any) -> Page:
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise unreadable(self.path, f"stored page {number} has no body")
        if not isinstance(number, int) or not isinstance(state, str | None):
            raise unreadable(self.path, f"stored page {number!r} has a malformed key")
        if not isinstance(headers, str | None):
            raise unreadable(self.path, f"stored page {number} has malformed headers")
        body, state, headers = (
            self._unmasked(body),
            self._unmasked_text(state),
            self._unmasked_text(headers),
        )
        kept: dict[str, str] | None = None
        if headers is not None:
            try:
                kept = orjson.loads(headers)
            except orjson.JSONDecodeError:
                kept = None
            if not isinstance(kept, dict) or not all(isinstance(v, str) for v in kept.values()):
                raise unreadable(self.path, f"stored page {number} has malformed headers")
        try:
            return reread(number, state, kept, body)
        except InvalidBodyError:
            raise unreadable(self.path, f"stored page {number} is not a listing body") from None
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            # Whatever a stored row holds, it is the row that is bad: never a crash later on.
            raise unreadable(self.path, f"stored page {number}: {str(exc)[:200]}") from None

    def close(self) -> None:
        """Commit what is recorded and close."""
        with contextlib.suppress(sqlite3.Error, OutputError):
            self.commit()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def discard(self) -> None:
        """Close and delete (with its shards'): the run it belonged to is finished."""
        self.close()
        remove_files(self.path)
        shutil.rmtree(self.path.parent / SHARDS_DIR, ignore_errors=True)


def write_failed(path: Path, exc: sqlite3.Error) -> OutputError:
    """The error for a checkpoint write that failed, e.g. on a full disk.

    It says no fix: whether ``--resume`` helps depends on what the checkpoint kept, which the
    run decides once it has stopped (see ``pipeline``).
    """
    return OutputError(f"cannot write the checkpoint {path}: {exc}", disk_full=disk_full(exc))


def create_failed(path: Path, exc: sqlite3.Error | OSError) -> OutputError:
    """The error for a checkpoint that cannot be created: nothing was fetched or saved yet."""
    folder = path.parent
    if full := disk_full(exc):
        fix = f"free space in {folder} and run the same command again"
    else:
        fix = (f"the output folder {folder} must be writable: fix its permissions or mount, or "
               "pick another --output-dir")  # fmt: skip
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputError(f"cannot create the checkpoint {path}: {why}; {fix}", disk_full=full)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says the disk (or a quota) is full."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (
            getattr(error, "disk_full", False)
            or (isinstance(error, sqlite3.Error)
                and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)
            or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
        ):  # fmt: skip
            return True
        error = error.__cause__ or error.__context__
    return False


def discard_path(path: Path) -> None:
    """Remove whatever is at the checkpoint's path, a folder included (``--restart``)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        remove_files(path)
        shutil.rmtree(path.parent / SHARDS_DIR, ignore_errors=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot discard the checkpoint {path}: {exc.strerror or exc}; remove it yourself"
        ) from None


def remove_files(path: Path) -> None:
    """Delete an SQLite file and its WAL companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
