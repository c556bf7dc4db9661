"""Deduplication with flat memory: one packed int per customer id.

Each processed customer is spooled to disk as it arrives; in memory we keep, per id, only the
winner's rank (score, page, position), a small code summarising its quality issues and
business fields (enough for the report), and its offset in the spool. The winner is the
highest score, then the lowest page, then the earliest position, whatever the arrival order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

from .rules import BUSINESS_FIELDS, FIELDS

_OFFSET_BITS: Final = 44  # spool files up to 16 TiB
_CODE_BITS: Final = 17  # 4 fields x 2 bits of issue + 9 bits of business field values
_POSITION_BITS: Final = 20
_PAGE_BITS: Final = 32
_OFFSET_MASK: Final = (1 << _OFFSET_BITS) - 1
_CODE_MASK: Final = (1 << _CODE_BITS) - 1
_RANK_SHIFT: Final = _OFFSET_BITS + _CODE_BITS
_MAX_POSITION: Final = (1 << _POSITION_BITS) - 1
_MAX_PAGE: Final = (1 << _PAGE_BITS) - 1

_ISSUE_CODES: Final = {"missing": 1, "invalid": 2}
_ISSUE_NAMES: Final = {1: "missing", 2: "invalid"}
# Bits per business field, in BUSINESS_FIELDS order: 2, 1, 2, 2, 2 = 9.
_VALUE_INDEX: Final = [{value: i for i, (value, _) in enumerate(c)} for _, c in BUSINESS_FIELDS]
_VALUE_BITS: Final = [max(1, (len(c) - 1).bit_length()) for _, c in BUSINESS_FIELDS]


def summary_code(customer: dict[str, Any]) -> int:
    """Pack a customer's quality issues and business fields into a small int."""
    code = 0
    for issue in customer["quality_issues"]:
        field, _, kind = issue.partition(":")
        code |= _ISSUE_CODES[kind] << (2 * FIELDS.index(field))
    shift = 8
    for (name, _), index, bits in zip(BUSINESS_FIELDS, _VALUE_INDEX, _VALUE_BITS, strict=True):
        code |= index[customer[name]] << shift
        shift += bits
    return code


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


class WinnerIndex:
    """The best copy of each customer seen so far, and where it lies in the spool."""

    def __init__(self) -> None:
        self._best: dict[int, int] = {}
        self.offered = 0

    def __len__(self) -> int:
        return len(self._best)

    @property
    def duplicates(self) -> int:
        """Copies that lost (or were replaced): offered minus unique."""
        return self.offered - len(self._best)

    def offer(
        self, customer_id: int, score: int, page: int, position: int, code: int, offset: int
    ) -> bool:
        """Record one copy; True if it is now the winner for its id."""
        if offset > _OFFSET_MASK or page > _MAX_PAGE:
            raise ValueError("spool offset or page number out of range")
        position = min(position, _MAX_POSITION)
        rank = (
            (score << (_PAGE_BITS + _POSITION_BITS))
            | ((_MAX_PAGE - page) << _POSITION_BITS)
            | (_MAX_POSITION - position)
        )
        packed = (((rank << _CODE_BITS) | code) << _OFFSET_BITS) | offset
        self.offered += 1
        current = self._best.get(customer_id)
        if current is None or packed >> _RANK_SHIFT > current >> _RANK_SHIFT:
            self._best[customer_id] = packed
            return True
        return False

    def winners(self) -> Iterator[tuple[int, int]]:
        """(customer_id, spool offset) of every winner, by customer_id."""
        best = self._best
        for customer_id in sorted(best):
            yield customer_id, best[customer_id] & _OFFSET_MASK

    def code_counts(self) -> Counter[int]:
        """How many winners share each summary code (a few hundred distinct at most)."""
        return Counter((packed >> _OFFSET_BITS) & _CODE_MASK for packed in self._best.values())
