"""Output files, each written whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import ConfigError, FolderInUseError, OutputError

CUSTOMERS_FILE = "processed_customers.json"
REPORT_FILE = "summary_report.json"
REJECTED_FILE = "rejected_records.jsonl"
LOCK_FILE = ".lock"
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
        """Append one rejected record, whatever it holds, as one line of valid JSON."""
        if self._handle is None:
            self._context = atomic_file(self.path)
            self._handle = self._context.__enter__()
        line = {"page": page, "position": position, "reason": reason, "record": record}
        try:
            data = orjson.dumps(line, default=repr)
        except orjson.JSONEncodeError:
            # Nested deeper than orjson's 254 levels, an integer wider than 64 bits (the
            # stdlib reads those whole), a lone surrogate: rare, so the slow path is fine.
            data = _dumps_any(line).encode()
        self._handle.write(data + b"\n")
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
    """Hold the output folder for one run; a second run on it gets a clear OutputError.

    Also removes temp files a killed run left behind (they are never the real outputs).
    """
    lock_path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a+b")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ConfigError(
            f"cannot use the output folder {folder}: {exc.strerror or exc} "
            "(--output-dir / CUSTOMER_PIPELINE_OUTPUT_DIR)"
        ) from None
    with lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock on this platform; run unguarded
            pass
        except OSError:
            raise FolderInUseError(
                f"another customer-pipeline run is using {folder}; wait for it or pick "
                "another --output-dir"
            ) from None
        for name in (CUSTOMERS_FILE, REPORT_FILE, REJECTED_FILE):
            for stale in folder.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        yield
