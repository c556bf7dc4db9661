"""Deduplication in constant memory: sorted runs on disk, merged at the end.

Every processed customer is written, behind a fixed-width sort key, into an in-memory run;
a full run is sorted and written to a scratch file in the output folder. At the end the runs
are merged (``heapq.merge``): lines come out by customer id, the best copy first, so the
winner of each id is simply the first line with that id. The key orders copies by highest
score, then lowest page, then earliest position, so the result never depends on arrival
order, and memory holds one run whatever the number of customers.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from .rules import BUSINESS_FIELDS, FIELDS

RUN_BYTES: Final = 16 << 20
# id (20 digits) | 100 - score (3) | page (10) | position (7) | summary code (5 hex) | tab
_KEY: Final = b"%020d%03d%010d%07d%05x\t"
_ID_END: Final = 20
_CODE_AT: Final = slice(40, 45)
_KEY_LEN: Final = 46
_MAX_PAGE: Final = 10**10 - 1
_MAX_POSITION: Final = 10**7 - 1

_ISSUE_CODES: Final = {"missing": 1, "invalid": 2}
_ISSUE_NAMES: Final = {1: "missing", 2: "invalid"}
# Bits per business field, in BUSINESS_FIELDS order: 2, 1, 2, 2, 2 = 9.
_VALUE_INDEX: Final = [{value: i for i, (value, _) in enumerate(c)} for _, c in BUSINESS_FIELDS]
_VALUE_BITS: Final = [max(1, (len(c) - 1).bit_length()) for _, c in BUSINESS_FIELDS]
_ISSUE_BITS: Final = {
    f"{field}:{kind}": bits << (2 * i)
    for i, field in enumerate(FIELDS)
    for kind, bits in _ISSUE_CODES.items()
}
_SHIFTS: Final = [8 + sum(_VALUE_BITS[:i]) for i in range(len(_VALUE_BITS))]
# Per business field: value -> its index, already shifted into place.
_VALUE_CODES: Final = tuple(
    {value: index << shift for value, index in table.items()}
    for table, shift in zip(_VALUE_INDEX, _SHIFTS, strict=True)
)


def summary_code(customer: dict[str, Any]) -> int:
    """Pack a customer's quality issues and business fields into a small int."""
    code = 0
    for issue in customer["quality_issues"]:
        code |= _ISSUE_BITS[issue]
    e, a, c, m, t = _VALUE_CODES
    return (
        code
        | e[customer["engagement_level"]]
        | a[customer["activity_status"]]
        | c[customer["acquisition_channel"]]
        | m[customer["market_segment"]]
        | t[customer["customer_tier"]]
    )


def describe_code(code: int) -> tuple[list[str], tuple[str, ...]]:
    """The (quality issues, business field values) that ``summary_code`` packed."""
    issues = []
    for i, field in enumerate(FIELDS):
        kind = (code >> (2 * i)) & 3
        if kind:
            issues.append(f"{field}:{_ISSUE_NAMES[kind]}")
    values = []
    shift = 8
    for (_, choices), bits in zip(BUSINESS_FIELDS, _VALUE_BITS, strict=True):
        values.append(choices[(code >> shift) & ((1 << bits) - 1)][0])
        shift += bits
    return issues, tuple(values)


class SortedSpool:
    """Customers spooled to sorted runs; ``winners()`` merges them to the best copy per id."""

    def __init__(self, folder: Path, run_bytes: int = RUN_BYTES) -> None:
        self.folder = folder
        self.run_bytes = run_bytes
        self.offered = 0
        self.unique = 0
        self.code_counts: Counter[int] = Counter()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._runs: list[IO[bytes]] = []

    @property
    def duplicates(self) -> int:
        """Copies that lost to a better copy of the same customer (known after winners())."""
        return self.offered - self.unique

    def add(
        self, customer_id: int, score: int, page: int, position: int, code: int, line: bytes
    ) -> None:
        """Spool one customer; ``line`` is its JSON, ending in a newline."""
        if page > _MAX_PAGE or position > _MAX_POSITION:
            raise ValueError(f"page {page} or position {position} out of range")
        entry = _KEY % (customer_id, 100 - score, page, position, code) + line
        self._buffer.append(entry)
        self._buffered += len(entry)
        self.offered += 1
        if self._buffered >= self.run_bytes:
            self._write_run()

    def _write_run(self) -> None:
        self._buffer.sort()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".run.", suffix=".spool", dir=self.folder)
        os.unlink(name)  # lives as long as it is open; nothing to clean up after a crash
        run = os.fdopen(fd, "w+b", buffering=1 << 16)
        run.writelines(self._buffer)
        run.flush()
        run.seek(0)
        self._runs.append(run)
        self._buffer = []
        self._buffered = 0

    def winners(self) -> Iterator[bytes]:
        """The JSON of each customer's best copy (no newline), by customer id."""
        self._buffer.sort()
        merged: Iterator[bytes] = heapq.merge(self._buffer, *self._runs)
        previous = b""
        counts = self.code_counts
        for entry in merged:
            customer_id = entry[:_ID_END]
            if customer_id == previous:
                continue
            previous = customer_id
            self.unique += 1
            counts[int(entry[_CODE_AT], 16)] += 1
            yield entry[_KEY_LEN:-1]

    def close(self) -> None:
        """Drop the runs."""
        for run in self._runs:
            with contextlib.suppress(OSError):
                run.close()
        self._runs = []
        self._buffer = []
