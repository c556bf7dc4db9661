"""Output files, each written whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .dedup import WinnerIndex
from .errors import OutputError

CUSTOMERS_FILE = "processed_customers.json"
REPORT_FILE = "summary_report.json"
REJECTED_FILE = "rejected_records.jsonl"
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


class Spool:
    """An append-only scratch file of serialized customers, read back by offset."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".spool.", suffix=".jsonl", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b", buffering=_BUFFER)
        self._size = 0
        self._map: mmap.mmap | None = None

    def append(self, line: bytes) -> int:
        """Store one serialized customer (no newline in it); returns its offset."""
        offset = self._size
        self._file.write(line)
        self._file.write(b"\n")
        self._size += len(line) + 1
        return offset

    def lines(self, offsets: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        """The stored lines at the given (key, offset) pairs, in that order."""
        self._file.flush()
        if self._size == 0:
            return
        if self._map is None:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        view = self._map
        for _, offset in offsets:
            yield view[offset : view.find(b"\n", offset)]

    def close(self) -> None:
        """Release and delete the spool."""
        if self._map is not None:
            self._map.close()
            self._map = None
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


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


def write_customers(path: Path, metadata: dict[str, Any], index: WinnerIndex, spool: Spool) -> None:
    """``{"metadata": ..., "customers": [...]}``, one customer per line, sorted by id."""
    head = orjson.dumps(metadata, option=orjson.OPT_INDENT_2)
    try:
        with atomic_file(path) as handle:
            handle.write(b'{\n"metadata": ')
            handle.write(head)
            handle.write(b',\n"customers": [')
            separator = b"\n"
            for line in spool.lines(index.winners()):
                handle.write(separator)
                handle.write(line)
                separator = b",\n"
            handle.write(b"\n]\n}\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
