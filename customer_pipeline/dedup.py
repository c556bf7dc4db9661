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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

from .errors import OutputError
from .fields import FIELD_TABLE, ISSUE_KINDS, FieldTable

RUN_BYTES: Final = 16 << 20
CODE_DIGITS: Final = 5
CODE_BITS: Final = 4 * CODE_DIGITS  # what the key's hex digits hold
# id (20 digits) | 100 - score (3) | page (10) | position (7) | summary code (hex) | tab
_KEY: Final = b"%020d%03d%010d%07d%0" + str(CODE_DIGITS).encode() + b"x\t"
_ID_END: Final = 20
_CODE_AT: Final = slice(40, 40 + CODE_DIGITS)
_KEY_LEN: Final = 40 + CODE_DIGITS + 1
_MAX_PAGE: Final = 10**10 - 1
_MAX_POSITION: Final = 10**7 - 1
_JSON: Final = slice(_KEY_LEN, -1)
_WHOLE: Final = slice(None)


class SortedRun(Protocol):
    """Spool entries in key order, one per line: a scratch file, or a shard's merged result."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class CodeLayout:
    """Where each quality issue and business value of a field table sits in the summary code.

    The low bits hold each rule field in table order (0 ok, 1 missing, 2 invalid), then each
    business field its value's index, in as few bits as its value count needs. The widths
    come from the table; a table that needs more than ``width`` bits is refused.
    """

    def __init__(self, table: FieldTable = FIELD_TABLE, width: int = CODE_BITS) -> None:
        self.table = table
        kinds = len(ISSUE_KINDS)
        self.issue_width = kinds.bit_length()  # ok or one of the kinds
        self.value_widths = tuple(max(1, (len(f.values) - 1).bit_length()) for f in table.business)
        rule_bits = self.issue_width * len(table.rules)
        self.bits = rule_bits + sum(self.value_widths)
        if self.bits > width:
            raise ValueError(
                f"the field table needs {self.bits} bits of summary code ({rule_bits} for"
                f" {len(table.rules)} rule fields, {sum(self.value_widths)} for"
                f" {len(table.business)} business fields) but the spool key holds {width}:"
                " raise CODE_DIGITS in customer_pipeline/dedup.py or drop a field"
            )
        shifts = [rule_bits + sum(self.value_widths[:i]) for i in range(len(table.business))]
        self._issue_fields = tuple(
            (field.name, self.issue_width * i) for i, field in enumerate(table.rules)
        )
        self._value_fields = tuple(
            (field.values, shift, (1 << bits) - 1)
            for field, shift, bits in zip(table.business, shifts, self.value_widths, strict=True)
        )
        self.pack: Callable[[dict[str, Any]], int] = self._packer(shifts)

    def _packer(self, shifts: list[int]) -> Callable[[dict[str, Any]], int]:
        """pack for this layout: a customer's issues and business values as an int."""
        issue_bits = {
            f"{field.name}:{kind}": state << (self.issue_width * i)
            for i, field in enumerate(self.table.rules)
            for state, kind in enumerate(ISSUE_KINDS, start=1)
        }
        # Per business field: value -> its index, already shifted into place.
        value_codes = [
            (field.name, {value: n << shift for n, value in enumerate(field.values)})
            for field, shift in zip(self.table.business, shifts, strict=True)
        ]

        def pack(customer: dict[str, Any]) -> int:
            """Pack the quality issues and business fields of a customer into a small int."""
            code = 0
            for issue in customer["quality_issues"]:
                code |= issue_bits[issue]
            for name, codes in value_codes:
                code |= codes[customer[name]]
            return code

        return pack

    def unpack(self, code: int) -> tuple[list[str], tuple[str, ...]]:
        """The (quality issues, business field values) that ``pack`` packed."""
        mask = (1 << self.issue_width) - 1
        issues = []
        for name, shift in self._issue_fields:
            state = (code >> shift) & mask
            if state:
                issues.append(f"{name}:{ISSUE_KINDS[state - 1]}")
        values = tuple(values[(code >> shift) & mask] for values, shift, mask in self._value_fields)
        return issues, values


CODE_LAYOUT: Final = CodeLayout(FIELD_TABLE)  # importing fails loudly if the table outgrew it
summary_code: Final = CODE_LAYOUT.pack
describe_code: Final = CODE_LAYOUT.unpack


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
        self._runs: list[SortedRun] = []

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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".run.", suffix=".spool", dir=self.folder)
            os.unlink(name)  # lives as long as it is open; nothing to clean up after a crash
            run = os.fdopen(fd, "w+b", buffering=1 << 16)
            self._runs.append(run)  # closed by close(), even if the writing fails
            run.writelines(self._buffer)
            run.flush()
            run.seek(0)
        except OSError as exc:
            raise OutputError.writing(f"a scratch file in {self.folder}", exc) from exc
        self._buffer = []
        self._buffered = 0

    def merge_in(self, run: SortedRun, offered: int) -> None:
        """Add a run sorted elsewhere (a shard's ``entries()``), of ``offered`` copies spooled."""
        self._runs.append(run)
        self.offered += offered

    def winners(self) -> Iterator[bytes]:
        """The JSON of each customer's best copy (no newline), by customer id."""
        return self._first_per_id(_JSON)

    def entries(self) -> Iterator[bytes]:
        """Each customer's best copy as spooled (key, JSON, newline), for another spool."""
        return self._first_per_id(_WHOLE)

    def _first_per_id(self, cut: slice) -> Iterator[bytes]:
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
            yield entry[cut]

    def close(self) -> None:
        """Drop the runs."""
        for run in self._runs:
            with contextlib.suppress(OSError):
                run.close()
        self._runs = []
        self._buffer = []
