"""processed_customers.jsonl: one customer a line, by id; the run's metadata is in the report.

The lines are the spool's bytes as they are, the same as the JSON document's, so this costs a
write per batch and nothing per customer. They go straight to the file's temp name in the
output folder and join the run's set on commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from ..errors import OutputError
from ._staged import StagedFile
from .base import CustomerBatch, RunMetadata, Sink, SinkContext

JSONL_FILE: Final = "processed_customers.jsonl"


class JsonLinesSink:
    """The JSON Lines export, staged with the run's other files and published with them."""

    files: ClassVar[tuple[str, ...]] = (JSONL_FILE,)
    transactional: ClassVar[bool] = False

    def __init__(self, context: SinkContext) -> None:
        self._file = StagedFile(context.outputs, JSONL_FILE)

    def __repr__(self) -> str:
        return f"JsonLinesSink({self._file.path!r})"

    @property
    def label(self) -> str:
        """The file's name."""
        return JSONL_FILE

    async def open(self) -> None:
        """Create the temp file the lines go to until commit."""
        self._file.open()

    async def write(self, batch: CustomerBatch) -> None:
        """Append the batch's customers, one a line, as the spool serialized them."""
        handle = self._file.handle
        try:
            handle.write(b"\n".join(batch.lines))
            handle.write(b"\n")
        except OSError as exc:
            raise OutputError.writing(self._file.path, exc) from exc

    async def commit(self, metadata: RunMetadata) -> None:
        """Stage the file whole (an empty file when there is no customer)."""
        self._file.commit()

    async def abort(self) -> None:
        """Drop the temp file (what is staged is RunOutputs' to drop)."""
        self._file.abort()


if TYPE_CHECKING:  # the port's shape, checked by mypy
    _IS_A_SINK: type[Sink] = JsonLinesSink
