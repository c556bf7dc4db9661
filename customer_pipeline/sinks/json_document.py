"""processed_customers.json: ``{"metadata": ..., "customers": [...]}``, one customer a line.

The metadata comes first in the document but is known only once every customer is in, so the
customers go to a scratch file (unlinked, in the output folder) and are copied in after it on
commit, by the kernel where it can.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import IO, TYPE_CHECKING, ClassVar, Final

import orjson

from ..errors import OutputError
from .base import CustomerBatch, RunMetadata, Sink, SinkContext

CUSTOMERS_FILE: Final = "processed_customers.json"
_BUFFER: Final = 1 << 20


class JsonDocumentSink:
    """The JSON export, staged with the run's other files and published with them."""

    files: ClassVar[tuple[str, ...]] = (CUSTOMERS_FILE,)
    transactional: ClassVar[bool] = False

    def __init__(self, context: SinkContext) -> None:
        self._outputs = context.outputs
        self._body: IO[bytes] | None = None
        self._separator = b"\n"

    def __repr__(self) -> str:
        return f"JsonDocumentSink({str(self._outputs.folder / CUSTOMERS_FILE)!r})"

    @property
    def label(self) -> str:
        """The file's name."""
        return CUSTOMERS_FILE

    async def open(self) -> None:
        """Create the scratch file the customers go to until commit."""
        folder = self._outputs.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Lives from open to commit or abort, across calls: no with block can hold it.
            self._body = tempfile.TemporaryFile(dir=folder, buffering=_BUFFER)  # noqa: SIM115
        except OSError as exc:
            raise OutputError.writing(f"in {folder}", exc) from exc
        self._separator = b"\n"

    async def write(self, batch: CustomerBatch) -> None:
        """Append the batch's customers, as the spool serialized them."""
        body = self._scratch()
        try:
            body.write(self._separator)
            body.write(b",\n".join(batch.lines))
        except OSError as exc:
            raise OutputError.writing(self._outputs.folder / CUSTOMERS_FILE, exc) from exc
        self._separator = b",\n"

    async def commit(self, metadata: RunMetadata) -> None:
        """Stage the whole document: metadata, then the customers."""
        body = self._scratch()
        try:
            with self._outputs.staging(CUSTOMERS_FILE) as handle:
                handle.write(b'{\n"metadata": ')
                handle.write(orjson.dumps(metadata.export, option=orjson.OPT_INDENT_2))
                handle.write(b',\n"customers": [')
                _copy(body, handle)
                handle.write(b"\n]\n}\n")
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Drop the scratch file (what is staged is RunOutputs' to drop)."""
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(OSError):
                body.close()

    def _scratch(self) -> IO[bytes]:
        if self._body is None:
            raise RuntimeError("JsonDocumentSink used before open() or after commit()/abort()")
        return self._body


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


if TYPE_CHECKING:  # the port's shape, checked by mypy
    _IS_A_SINK: type[Sink] = JsonDocumentSink
