"""Where a run's customers go: one sink per output format or database, behind one port.

The port (open / write / commit / abort, the batch type, the commit rule across several
sinks) is in ``base``. A new format or database is a new module here with one class, plus
one line in FORMATS (chosen by name) or DATABASES (chosen by the URL's scheme). Entries are
``"module:Class"``, a module of this package (or any importable one), imported when a run
needs it, so an optional library costs nothing to runs that do not use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError
from .base import (
    BATCH_SIZE,
    CustomerBatch,
    RunMetadata,
    Sink,
    SinkContext,
    abort_all,
    batches,
    commit_all,
    commit_order,
)

if TYPE_CHECKING:
    from ..settings import Settings
    from ..writer import RunOutputs

FORMATS: Final[dict[str, str]] = {
    "json": ".json_document:JsonDocumentSink",
    "jsonl": ".jsonl:JsonLinesSink",
    "parquet": ".parquet:ParquetSink",
}
DATABASES: Final[dict[str, str]] = {  # URL scheme -> "module:Class"
    "duckdb": ".duckdb:DuckDbSink",
    "sqlite": ".sqlite:SqliteSink",
    "postgresql": ".postgres:PostgresSink",
    "postgres": ".postgres:PostgresSink",
}

__all__ = [
    "BATCH_SIZE",
    "DATABASES",
    "FORMATS",
    "CustomerBatch",
    "RunMetadata",
    "Sink",
    "SinkContext",
    "abort_all",
    "batches",
    "commit_all",
    "commit_order",
    "create",
    "output_files",
    "sink_class",
]


def sink_class(target: str) -> type[Sink]:
    """The sink class for a format name or a database URL; ConfigError if there is none."""
    scheme, has_scheme, _ = target.partition("://")
    if has_scheme:
        entry = DATABASES.get(scheme.split("+")[0].lower())
        known = ", ".join(f"{name}://" for name in DATABASES) or "none yet"
        what = f"no database sink for {scheme}:// URLs (known: {known})"
    else:
        entry = FORMATS.get(target)
        what = f"unknown output format {target!r} (known: {', '.join(FORMATS)})"
    if entry is None:
        raise ConfigError(f"{what}; pick one of those")
    module, _, name = entry.partition(":")
    cls: type[Sink] = getattr(importlib.import_module(module, __name__), name)
    return cls


def create(targets: Iterable[str], outputs: RunOutputs, settings: Settings) -> list[Sink]:
    """One sink per target (a format name or a database URL), in the order given."""
    chosen = dict.fromkeys(targets)  # a target named twice is written once
    return [sink_class(target)(SinkContext(target, outputs, settings)) for target in chosen]


def output_files() -> tuple[str, ...]:
    """Every output-folder file a registered format may publish, in registry order."""
    return tuple(name for target in FORMATS for name in sink_class(target).files)
