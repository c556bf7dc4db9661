"""A file of the run's set held open across a sink's calls, from ``open`` to ``commit``/``abort``.

``RunOutputs.staging`` is a ``with`` block; a sink that streams into its file from open to
commit cannot hold one, so this enters it on open and leaves it on commit (the file joins
the set) or abort (the temp file is removed, nothing joins).
"""

from __future__ import annotations

import contextlib
from typing import IO, TYPE_CHECKING

from ..errors import OutputError

if TYPE_CHECKING:
    from ..writer import RunOutputs


class StagedFile:
    """``name`` in the output folder, written through ``handle`` until commit or abort."""

    def __init__(self, outputs: RunOutputs, name: str) -> None:
        self.outputs = outputs
        self.name = name
        self._context: contextlib.AbstractContextManager[IO[bytes]] | None = None
        self._handle: IO[bytes] | None = None

    @property
    def path(self) -> str:
        """Where the file is published, for messages."""
        return str(self.outputs.folder / self.name)

    @property
    def handle(self) -> IO[bytes]:
        """The open temp file."""
        if self._handle is None:
            raise RuntimeError(f"{self.name} written before open() or after commit()/abort()")
        return self._handle

    def open(self) -> IO[bytes]:
        """Create the temp file (OutputError if the folder refuses it)."""
        self.abort()
        context = self.outputs.staging(self.name)
        self._handle = context.__enter__()
        self._context = context
        return self._handle

    def commit(self) -> None:
        """Finish the file and stage it for the set (OutputError if it cannot be)."""
        context, self._context, self._handle = self._context, None, None
        if context is None:
            raise RuntimeError(f"{self.name} committed before open() or after commit()/abort()")
        context.__exit__(None, None, None)

    def abort(self) -> None:
        """Remove the temp file; harmless when there is none."""
        context, self._context, self._handle = self._context, None, None
        if context is not None:
            with contextlib.suppress(Exception):
                # The error thrown in makes the temp file go; staging re-raises it, unwanted.
                context.__exit__(OutputError, OutputError("aborted"), None)
