"""The output folder's files, each written whole or not at all (temp file + rename).

A run owns a set of files in its folder: what its sinks write (see ``sinks``), the rejects
and the report. RunOutputs stages them and publishes them as one set, so the folder never
mixes files of two runs; ``exclusive_folder`` holds the folder for one run at a time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import ConfigError, FolderInUseError, OutputError

if sys.platform != "win32":
    import fcntl

REPORT_FILE = "summary_report.json"
REJECTED_FILE = "rejected_records.jsonl"
LEGACY_LOCK_FILE = ".lock"  # what earlier versions locked, and left in every folder
_BUFFER = 1 << 20


def _file_mode() -> int:
    """rw for everyone the umask allows, as open() would give (mkstemp's default is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` only if the block finishes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb", buffering=_BUFFER) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def staged(path: Path) -> Path:
    """Where an output waits, written whole, until its run commits."""
    return path.with_name(f".{path.name}.staged")


def write_json(path: Path, document: Any) -> None:
    """Write one JSON document atomically, indented for people."""
    try:
        with atomic_file(path) as handle:
            _dump_indented(handle, document)
    except OSError as exc:
        raise OutputError.writing(path, exc) from exc


def _dump_indented(handle: IO[bytes], document: Any) -> None:
    handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    handle.write(b"\n")


def run_files(files: Iterable[str]) -> tuple[str, ...]:
    """Every file of a run's set, in publishing order: the report last, as it describes the rest."""
    return (REJECTED_FILE, *files, REPORT_FILE)


class RejectedWriter:
    """Streams rejected records to a temp file; it becomes the real file only on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._context: contextlib.AbstractContextManager[IO[bytes]] | None = None
        self._handle: IO[bytes] | None = None

    def write(self, page: int, position: int, reason: str, record: Any) -> None:
        """Append one rejected record, whatever it holds, as one line of valid JSON."""
        line = {"page": page, "position": position, "reason": reason, "record": record}
        try:
            data = orjson.dumps(line, default=repr)
        except orjson.JSONEncodeError:
            # Nested deeper than orjson's 254 levels, an integer wider than 64 bits (the
            # stdlib reads those whole), a lone surrogate: rare, so the slow path is fine.
            data = _dumps_any(line).encode()
        try:
            if self._handle is None:
                self._context = atomic_file(self.path)
                self._handle = self._context.__enter__()
            self._handle.write(data + b"\n")
        except OSError as exc:
            raise OutputError.writing(self.path, exc) from exc
        self.count += 1

    def commit(self) -> Path | None:
        """Publish the file (if any record was rejected); returns its path or None."""
        if self._context is None:
            return None
        context, self._context, self._handle = self._context, None, None
        context.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop the temp file; nothing is published."""
        if self._context is not None:
            context, self._context, self._handle = self._context, None, None
            with contextlib.suppress(Exception):
                context.__exit__(OutputError, OutputError("aborted"), None)


def _dumps_any(value: Any) -> str:
    """JSON for any value read from JSON, without recursion: nesting depth is no limit.

    ASCII-only, so a lone surrogate becomes an escape and the line stays valid UTF-8;
    anything that is not a JSON type is written as its repr, a string.
    """
    parts: list[str] = []
    # A stack of what is left to write: values, and the literal text between them.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Text):
            parts.append(item)
        elif isinstance(item, dict):
            entries: list[Any] = []
            for index, (key, inner) in enumerate(item.items()):
                prefix = "{" if index == 0 else ", "
                entries += [_Text(prefix + json.dumps(str(key)) + ": "), inner]
            entries.append(_Text("}" if item else "{}"))
            stack.extend(reversed(entries))
        elif isinstance(item, list | tuple):
            entries = []
            for index, inner in enumerate(item):
                entries += [_Text("[" if index == 0 else ", "), inner]
            entries.append(_Text("]" if item else "[]"))
            stack.extend(reversed(entries))
        elif isinstance(item, int) and item.bit_length() > 14_000:
            parts.append(f'"an integer of {item.bit_length()} bits"')  # str() refuses it
        elif (
            item is None
            or isinstance(item, str | int | bool)
            or (isinstance(item, float) and math.isfinite(item))
        ):
            parts.append(json.dumps(item))
        else:
            parts.append(json.dumps(repr(item)))
    return "".join(parts)


class _Text(str):
    """Literal JSON text on _dumps_any's stack, told apart from a string value."""

    __slots__ = ()


class RunOutputs:
    """The files one run owns in its folder, published together on commit.

    ``files`` names what the sinks may write, whether or not this run writes them. Each file
    is first written whole under its staged name; ``commit`` renames the staged ones into
    place, the report last, and removes the ones this run did not write (an earlier run's
    rejects or another format's file), so the folder holds one run's set. A run that fails
    or is interrupted before its commit leaves the last committed set as it was.
    """

    def __init__(self, folder: Path, files: Iterable[str] = ()) -> None:
        self.folder = folder
        self.names = run_files(files)
        self.rejected = RejectedWriter(staged(folder / REJECTED_FILE))
        self._staged: set[str] = set()

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[IO[bytes]]:
        """A binary file that joins the set under ``name`` if the block finishes."""
        if name not in self.names:
            raise ValueError(f"{name} is not one of this run's files {self.names}")
        path = self.folder / name
        try:
            with atomic_file(staged(path)) as handle:
                yield handle
        except OSError as exc:
            raise OutputError.writing(path, exc) from exc
        self._staged.add(name)

    def commit(self, report: dict[str, Any]) -> Path | None:
        """Stage the report, then publish the set; returns the rejects file's path or None."""
        try:
            with self.staging(REPORT_FILE) as handle:
                _dump_indented(handle, report)
            if self.rejected.commit() is not None:
                self._staged.add(REJECTED_FILE)
            self._publish()
        except BaseException:
            self.abort()
            raise
        return self.folder / REJECTED_FILE if REJECTED_FILE in self._staged else None

    def abort(self) -> None:
        """Drop whatever is staged; the folder keeps the last committed set."""
        self.rejected.abort()
        self._staged.clear()
        for name in self.names:
            with contextlib.suppress(OSError):
                staged(self.folder / name).unlink()

    def _publish(self) -> None:
        touched = False
        for name in self.names:
            path = self.folder / name
            try:
                if name in self._staged:
                    os.replace(staged(path), path)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()  # an earlier run's: this run's report does not cover it
            except OSError as exc:
                note = ""
                if touched:  # half the set is already this run's: drop the rest of the old
                    for other in self.names:
                        with contextlib.suppress(OSError):
                            (self.folder / other).unlink()
                    note = "; the folder's other output files were removed, not left mixed"
                raise OutputError.writing(path, exc, note) from exc
            touched = True
        _sync_folder(self.folder)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable: they live in the folder's own entries."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive_folder(folder: Path, files: Iterable[str] = ()) -> Iterator[None]:
    """Hold the output folder for one run; a second run on it gets a clear FolderInUseError.

    The lock is taken on the folder itself, so no lock file is left behind. Also removes what
    a killed run left: the temp and staged files of a run's set (``run_files(files)``), never
    the real outputs.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held = _lock(folder)
    except OSError as exc:
        raise ConfigError(
            f"cannot use the output folder {folder}: {exc.strerror or exc} "
            "(--output-dir / CUSTOMER_PIPELINE_OUTPUT_DIR)"
        ) from None
    try:
        _sweep(folder, run_files(files))
        yield
    finally:
        if held is not None:
            os.close(held)  # releases the lock


def _in_use(folder: Path) -> FolderInUseError:
    """The error for a folder another run holds."""
    return FolderInUseError(
        f"another customer-pipeline run is using {folder}; wait for it or pick another --output-dir"
    )


def _lock(folder: Path) -> int | None:
    """Lock ``folder`` for this run; the descriptor that holds the lock (close to release)."""
    if sys.platform == "win32":  # pragma: no cover - no flock there; run unguarded
        return None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(folder) from None
    except OSError:
        # NFS emulates flock with POSIX locks, which need a file open for writing: lock a
        # file there instead, and keep it (unlinking a lock file races with its next taker).
        os.close(fd)
        return _lock_file(folder / LEGACY_LOCK_FILE, os.O_RDWR | os.O_CREAT, folder)
    try:
        # A run of an earlier version locks this file instead: respect it, then retire it.
        legacy = _lock_file(folder / LEGACY_LOCK_FILE, os.O_RDONLY, folder)
    except OSError:  # none there (or not ours to open): nothing to retire
        return fd
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        (folder / LEGACY_LOCK_FILE).unlink()
    os.close(legacy)
    return fd


def _lock_file(path: Path, flags: int, folder: Path) -> int:
    """Open ``path`` and lock it; FolderInUseError when someone else holds it."""
    fd = os.open(path, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise _in_use(folder) from None
    return fd


def _sweep(folder: Path, names: tuple[str, ...]) -> None:
    """Remove the temp and staged output files a killed run left behind."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:  # best effort
        for entry in entries:
            bare = entry.name.lstrip(".")
            if (
                entry.name.startswith(".")
                and bare.endswith((".tmp", ".staged"))
                and any(bare.startswith(f"{name}.") for name in names)
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
