"""The sink port: where a run's deduplicated customers go (a file format, a database).

A sink is ``open`` / ``write(batch)`` / ``commit(metadata)`` / ``abort``:

- ``open`` runs before the first request, so a sink that cannot work (a library missing,
  a database unreachable) fails the run before anything is fetched. Heavy or optional
  libraries are imported there, never at module level: every run imports each registered
  format's module to learn its files (see ``sinks.FORMATS``).
- ``write`` gets the customers in ``customer_id`` order, a CustomerBatch at a time, as they
  stream out of the dedup spool; the whole set is never in memory. Nothing written is
  visible yet: a file sink writes to a scratch file, a database sink into an open
  transaction.
- ``commit`` makes it all visible at once, or raises and leaves what was there.
- ``abort`` drops what was written and leaves what was there; it is called whenever the run
  does not reach the sink's commit (a failed stage, another sink's failure, a signal),
  and must be harmless after a commit or a failed commit.

Commit across several sinks (``commit_all``) never leaves a destination half written:

1. File sinks commit first, in order: each finishes its file under a staged name in the
   output folder (the part that can fail: the disk may be full). Nothing is published.
2. Then transactional sinks (databases), in order: each commits its transaction.
3. Last, the pipeline's RunOutputs renames the staged files into place as one set, the
   summary report last (see ``writer``).

Any failure aborts every sink that has not committed: staged files are dropped, open
transactions rolled back, and the output folder keeps the last run's set (only a rename
failing halfway through step 3 empties the set instead of mixing two runs). A database that
already committed stays committed (a committed transaction cannot be taken back); it holds
this run's customers whole, never part of them. The run then fails and its error names the
sinks that did commit; the checkpoint is kept, so running again with ``--resume`` writes the
same customers everywhere (databases upsert by ``customer_id``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar

import anyio
import orjson

from ..errors import OutputError

if TYPE_CHECKING:
    from ..settings import Settings
    from ..writer import RunOutputs

BATCH_SIZE: Final = 4096
T = TypeVar("T")


@dataclass(slots=True)
class CustomerBatch:
    """Consecutive customers by ``customer_id``: their JSON as the spool holds it, parsed on demand.

    The JSON document copies ``lines`` as they are; a typed sink (Parquet, a database) asks
    for ``records()`` or ``columns()``, parsed once per batch whichever sinks ask.
    """

    lines: Sequence[bytes]
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.lines)

    def records(self) -> list[dict[str, Any]]:
        """The customers as dicts (the keys and order of the JSON export)."""
        if self._records is None:
            loads = orjson.loads
            self._records = [loads(line) for line in self.lines]
        return self._records

    def columns(self) -> dict[str, list[Any]]:
        """The customers as one list per field, in the export's field order."""
        records = self.records()
        if not records:
            return {}
        return {name: [record[name] for record in records] for name in records[0]}


def batches(lines: Iterable[bytes], size: int = BATCH_SIZE) -> Iterator[CustomerBatch]:
    """``lines`` (the spool's winners) cut into batches of at most ``size``."""
    remaining = iter(lines)
    while chunk := list(itertools.islice(remaining, size)):
        yield CustomerBatch(chunk)


@dataclass(frozen=True, slots=True)
class RunMetadata:
    """What a sink may record about the run once every customer is written."""

    export: dict[str, Any]  # the export's "metadata" block: counts, bands, complete, source
    report: dict[str, Any]  # the summary report, as summary_report.json will hold it


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink is built from: its target and the run it belongs to."""

    target: str  # a format name ("json") or a database URL
    outputs: RunOutputs  # the run's output files: a file sink stages its files here
    settings: Settings


class Sink(Protocol):
    """One destination of the run's customers; built as ``SinkClass(context)``."""

    # Output-folder files this kind of sink may publish (none for a database): the folder
    # holds one run's set, so a file of a format this run did not write is removed.
    files: ClassVar[tuple[str, ...]]
    # True for a sink whose commit is a transaction of its own (a database), False for one
    # that stages files for RunOutputs to publish with the rest of the set.
    transactional: ClassVar[bool]

    def __init__(self, context: SinkContext) -> None: ...

    @property
    def label(self) -> str:
        """What messages call it (a file name, a URL without its password)."""
        ...

    async def open(self) -> None:
        """Get ready to write: connect, create scratch space; nothing visible changes."""
        ...

    async def write(self, batch: CustomerBatch) -> None:
        """Add the next customers (ids ascending, each once in the run)."""
        ...

    async def commit(self, metadata: RunMetadata) -> None:
        """Make everything written visible at once, or raise and leave what was there."""
        ...

    async def abort(self) -> None:
        """Drop everything written; harmless after commit and when called twice."""
        ...


def commit_order(sinks: Iterable[Sink]) -> list[Sink]:
    """File sinks first, then transactional ones, each group in the order given."""
    return sorted(sinks, key=lambda sink: sink.transactional)


async def commit_all(sinks: Sequence[Sink], metadata: RunMetadata, publish: Callable[[], T]) -> T:
    """Commit every sink in ``commit_order``, then ``publish`` the staged files; returns its result.

    On a failure the sinks not yet committed are aborted and the error re-raised; when a
    transactional sink had already committed, the error says which, so nobody takes its rows
    for those of a run that failed.
    """
    committed: list[Sink] = []
    try:
        for sink in commit_order(sinks):
            await sink.commit(metadata)
            committed.append(sink)
        return publish()
    except BaseException as exc:
        await abort_all(sink for sink in sinks if all(sink is not c for c in committed))
        done = [sink.label for sink in committed if sink.transactional]
        if done and isinstance(exc, OutputError):
            raise OutputError(
                f"{exc} (already committed with this run's customers: {', '.join(done)}; "
                "the other outputs keep their last run's)",
                disk_full=exc.disk_full,
            ) from exc
        raise


async def abort_all(sinks: Iterable[Sink]) -> None:
    """Abort each sink, even while the run is being cancelled; an abort's own error is dropped.

    The error that made the run abort is the one worth reporting.
    """
    with anyio.CancelScope(shield=True):
        for sink in sinks:
            with contextlib.suppress(Exception):
                await sink.abort()
