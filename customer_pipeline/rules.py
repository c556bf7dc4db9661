"""The record rules of a field table (``fields``; the README's "Output" states them), as pure
functions over plain values.

Nothing here does I/O or keeps state, so every rule is testable on its own and fast on the hot
path (a processed customer is a plain dict in the export's key order). ``RecordRules`` builds
the functions of one table; the module-level functions are those of ``FIELD_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .fields import FIELD_TABLE, FieldTable

FIELDS: Final = FIELD_TABLE.rule_names  # the scored fields, in quality_issues order
MAX_ID: Final = 2**63 - 1  # beyond this, JSON consumers (BigQuery, JavaScript) lose the id


class Rejected(Exception):
    """A raw record with no usable id, or not an object; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_id(value: Any) -> int:
    """The customer id: an integer or its canonical decimal string, >= 1. Raises Rejected."""
    if isinstance(value, bool):
        raise Rejected("id is a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        # The common case first, in three cheap str calls; any other string is refused below.
        if not (value.isdigit() and value.isascii() and (value[0] != "0" or len(value) == 1)):
            raise Rejected(_why_not_canonical(value))
        if len(value) > 19:  # int() of thousands of digits is slow, or refused outright
            raise Rejected(f"id {_shown(value)} is larger than 2**63-1")
        number = int(value)
    elif value is None:
        raise Rejected("id missing")
    else:
        raise Rejected("id is not an integer")
    if number < 1:
        raise Rejected(_BELOW_1)
    if number > MAX_ID:
        shown = _shown(str(number)) if number.bit_length() < 14_000 else "of over 4,000 digits"
        raise Rejected(f"id {shown} is larger than 2**63-1")
    return number


_BELOW_1: Final = "id is less than 1"
_NOT_CANONICAL: Final = "id is not a canonical integer string: "


def _why_not_canonical(value: str) -> str:
    """Why a string that is not the canonical decimal of a positive integer is no id.

    " 18 ", "018" and "+18" would otherwise be customer 18 too, merged with the real one.
    """
    text = value.strip()
    if not text:
        return "id missing"
    digits = text.removeprefix("-").removeprefix("+")
    if not (digits and digits.isascii() and digits.isdigit()) or text[1:2] in ("-", "+"):
        return "id is not an integer"
    if text[0] == "-":
        return _BELOW_1  # what the int says: a negative id is refused for its value
    if text != value:
        return _NOT_CANONICAL + "surrounding whitespace"
    if text[0] == "+":
        return _NOT_CANONICAL + "plus sign"
    return _NOT_CANONICAL + "leading zero"


def _shown(digits: str) -> str:
    """A long number cut after 31 digits, saying how long it was."""
    return digits if len(digits) <= 31 else f"{digits[:31]}...({len(digits)} digits)"


_MASK64: Final = (1 << 64) - 1
_DRAW_BITS: Final = 12
_DRAW_MASK: Final = (1 << _DRAW_BITS) - 1
_DRAWS_PER_MIX: Final = 64 // _DRAW_BITS  # business fields drawn from one 64-bit mix


def _share_table(values: tuple[str, ...], shares: tuple[float, ...]) -> tuple[str, ...]:
    """Maps each 12-bit uniform value to its value, by cumulative share (bias < 0.03%)."""
    size = 1 << _DRAW_BITS
    table: list[str] = []
    cumulative = 0.0
    for value, share in zip(values, shares, strict=True):
        cumulative += share
        table.extend([value] * (round(cumulative * size) - len(table)))
    table.extend([values[-1]] * (size - len(table)))  # a float sum a hair under 1
    return tuple(table[:size])


def _mix(seed: int, customer_id: int) -> int:
    """splitmix64 of (seed, id): 64 well-mixed bits, the same on every platform and run."""
    z = customer_id * 0x9E3779B97F4A7C15 + seed * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class RecordRules:
    """The rules of one field table: its per-record functions, built once from it."""

    def __init__(self, table: FieldTable = FIELD_TABLE) -> None:
        self.table = table
        self.validate_and_score: Callable[[Any], dict[str, Any]] = _validator(table)
        self.enrich: Callable[[dict[str, Any], int], dict[str, Any]] = _enricher(table)

    def business_fields(self, seed: int, customer_id: int) -> tuple[str, ...]:
        """The business fields' values: deterministic per (seed, customer_id), shares as set."""
        drawn = self.enrich({"customer_id": customer_id}, seed)
        return tuple(drawn[name] for name in self.table.business_names)

    def process(self, raw: Any, seed: int) -> dict[str, Any]:
        """validate_and_score then enrich: one raw record to one customer. Raises Rejected."""
        return self.enrich(self.validate_and_score(raw), seed)


def _validator(table: FieldTable) -> Callable[[Any], dict[str, Any]]:
    """validate_and_score for ``table``: a customer from one raw record, business fields None."""
    rules = [
        (f.name, f"{f.name}:missing", f"{f.name}:invalid", f.check, f.keep_as) for f in table.rules
    ]
    derived = [(d.name, d.derive, d.inputs) for d in table.derived]
    template = dict.fromkeys(table.column_names)  # the export's key order
    top, penalty = table.top_score, table.penalty

    def validate_and_score(raw: Any) -> dict[str, Any]:
        """A customer from one raw record, business fields still None. Raises Rejected."""
        if not isinstance(raw, dict):
            raise Rejected("record is not a JSON object")
        customer = template.copy()
        customer["customer_id"] = parse_id(raw.get("id"))
        issues: list[str] = []
        get = raw.get
        for name, missing, invalid, check, keep_as in rules:
            value = get(name)
            if isinstance(value, str) and (value := value.strip()):
                # An invalid value is kept as sent (trimmed) so it can be fixed at the source.
                if check is not None:
                    kept = check(value)
                    if not kept:
                        issues.append(invalid)
                        kept = None
                    if keep_as is not None:
                        customer[keep_as] = kept
            else:  # "" is what strip() left of a blank string
                issues.append(missing if value is None or value == "" else invalid)
                value = None
            customer[name] = value
        for name, derive, inputs in derived:
            customer[name] = derive(*[customer[column] for column in inputs])
        customer["data_quality_score"] = top - penalty * len(issues)
        customer["quality_issues"] = issues
        return customer

    return validate_and_score


def _enricher(table: FieldTable) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """enrich for ``table``: fill in a customer's business fields; returns it."""
    # One 64-bit mix feeds five fields; a sixth and on get the next mix, chained.
    draws = [
        (f.name, _share_table(f.values, f.shares), _DRAW_BITS * (i % _DRAWS_PER_MIX))
        for i, f in enumerate(table.business)
    ]

    def enrich(customer: dict[str, Any], seed: int) -> dict[str, Any]:
        """Fill in the business fields of a customer from validate_and_score; returns it."""
        customer_id = customer["customer_id"]
        mixed = seed
        for name, shares, shift in draws:
            if shift == 0:
                mixed = _mix(mixed, customer_id)
            customer[name] = shares[(mixed >> shift) & _DRAW_MASK]
        return customer

    return enrich


RULES: Final = RecordRules(FIELD_TABLE)
validate_and_score: Final = RULES.validate_and_score
enrich: Final = RULES.enrich
business_fields: Final = RULES.business_fields
process: Final = RULES.process
