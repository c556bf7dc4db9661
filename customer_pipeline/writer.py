"""Output files, each written whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import ConfigError, FolderInUseError, OutputError

if sys.platform != "win32":
    import fcntl

CUSTOMERS_FILE = "processed_customers.json"
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


def write_json(path: Path, document: Any) -> None:
    """Write one JSON document atomically, indented for people."""
    try:
        with atomic_file(path) as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            handle.write(b"\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


class RejectedWriter:
    """Streams rejected records to a temp file; it becomes the real file only on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._context: contextlib.AbstractContextManager[IO[bytes]] | None = None
        self._handle: IO[bytes] | None = None

    def write(self, page: int, position: int, reason: str, record: Any) -> None:
        if self._handle is None:
            self._context = atomic_file(self.path)
            self._handle = self._context.__enter__()
        line = {"page": page, "position": position, "reason": reason, "record": record}
        self._handle.write(orjson.dumps(line, default=repr) + b"\n")
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


def write_customers(
    path: Path, customers: Iterable[bytes], metadata: Callable[[], dict[str, Any]]
) -> None:
    """``{"metadata": ..., "customers": [...]}`` with one customer (JSON bytes) per line.

    ``metadata`` is called once every customer has been consumed, so it can carry counts
    only known then; the customers go to a scratch file first and are copied in after it.
    """
    try:
        with tempfile.TemporaryFile(dir=path.parent) as body:
            separator = b"\n"
            while chunk := list(itertools.islice(customers, 4096)):
                body.write(separator)
                body.write(b",\n".join(chunk))
                separator = b",\n"
            body.seek(0)
            with atomic_file(path) as handle:
                handle.write(b'{\n"metadata": ')
                handle.write(orjson.dumps(metadata(), option=orjson.OPT_INDENT_2))
                handle.write(b',\n"customers": [')
                _copy(body, handle)
                handle.write(b"\n]\n}\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _copy(source: IO[bytes], target: IO[bytes]) -> None:
    """Append all of ``source`` to ``target``, in the kernel where it can."""
    source.flush()
    target.flush()
    start = target.seek(0, os.SEEK_END)
    size = os.fstat(source.fileno()).st_size
    try:
        copied = 0
        while copied < size:
            done = os.copy_file_range(source.fileno(), target.fileno(), size - copied, copied)
            if done == 0:
                raise OSError("copy_file_range made no progress")
            copied += done
        target.seek(0, os.SEEK_END)
        return
    except (AttributeError, OSError):  # no copy_file_range here, or not for these files
        target.truncate(start)
        target.seek(start)
    source.seek(0)
    shutil.copyfileobj(source, target, _BUFFER)


@contextlib.contextmanager
def exclusive_folder(folder: Path) -> Iterator[None]:
    """Hold the output folder for one run; a second run on it gets a clear FolderInUseError.

    The lock is taken on the folder itself, so no lock file is left behind. Also removes what
    a killed run left: its temp files (never the real outputs).
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
        _sweep(folder)
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


def _sweep(folder: Path) -> None:
    """Remove the temp files a killed run left behind."""
    for name in (CUSTOMERS_FILE, REPORT_FILE, REJECTED_FILE):
        for stale in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
