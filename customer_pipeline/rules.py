"""The record rules of a field table (``fields``), as pure functions over plain values.

Nothing here does I/O or keeps state, so every rule is testable on its own and fast on the hot
path (a processed customer is a plain dict in the export's key order). ``RecordRules`` compiles
a table once; the module-level functions are those of ``FIELD_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .fields import FIELD_TABLE, FieldTable, compile_function

FIELDS: Final = FIELD_TABLE.rule_names  # the scored fields, in quality_issues order
MAX_ID: Final = 2**63 - 1  # beyond this, JSON consumers (BigQuery, JavaScript) lose the id


class Rejected(Exception):
    """A raw record with no usable id, or not an object; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_id(value: Any) -> int:
    """The customer id: an integer or integral string >= 1 (not a bool). Raises Rejected."""
    if isinstance(value, bool):
        raise Rejected("id is a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise Rejected("id missing" if not text else "id is not an integer")
        digits = text.lstrip("0") or "0"
        if len(digits) > 19:  # int() of thousands of digits is slow, or refused outright
            raise Rejected(f"id {_shown(digits)} is larger than 2**63-1")
        number = int(digits)
    elif value is None:
        raise Rejected("id missing")
    else:
        raise Rejected("id is not an integer")
    if number < 1:
        raise Rejected("id is less than 1")
    if number > MAX_ID:
        shown = _shown(str(number)) if number.bit_length() < 14_000 else "of over 4,000 digits"
        raise Rejected(f"id {shown} is larger than 2**63-1")
    return number


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
    """The rules of one field table: straight-line per-record functions generated once from it."""

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
    namespace: dict[str, Any] = {"Rejected": Rejected, "parse_id": parse_id}
    local = {"customer_id": "customer_id"}  # column -> the local that holds its value
    lines = [
        "def validate_and_score(raw):",
        '    """A customer from one raw record, business fields still None. Raises Rejected."""',
        "    if not isinstance(raw, dict):",
        "        raise Rejected('record is not a JSON object')",
        "    customer_id = parse_id(raw.get('id'))",
        "    issues = []",
        "    get = raw.get",
    ]
    for i, field in enumerate(table.rules):
        value = local[field.name] = f"value{i}"
        missing, invalid = repr(f"{field.name}:missing"), repr(f"{field.name}:invalid")
        not_a_string = [  # "" is what strip() left of a blank string
            f"        issues.append({missing} if {value} is None or {value} == '' else {invalid})",
            f"        {value} = None",
        ]
        lines.append(f"    {value} = get({field.name!r})")
        if field.check is None:
            lines += [f"    if not isinstance({value}, str) or not ({value} := {value}.strip()):"]
            lines += not_a_string
            continue
        # An invalid value is kept as sent (trimmed) so it can be fixed at the source.
        namespace[f"check{i}"] = field.check
        lines.append(f"    if isinstance({value}, str) and ({value} := {value}.strip()):")
        if field.keep_as is None:
            lines += [f"        if not check{i}({value}):", f"            issues.append({invalid})"]
        else:
            kept = local[field.keep_as] = f"kept{i}"
            lines[-1:-1] = [f"    {kept} = None"]
            lines += [
                f"        {kept} = check{i}({value})",
                f"        if not {kept}:",
                f"            issues.append({invalid})",
                f"            {kept} = None",
            ]
        lines += ["    else:", *not_a_string]
    for i, derived in enumerate(table.derived):
        namespace[f"derive{i}"] = derived.derive
        local[derived.name] = f"derived{i}"
        arguments = ", ".join(local[name] for name in derived.inputs)
        lines.append(f"    derived{i} = derive{i}({arguments})")
    local["data_quality_score"] = f"{table.top_score:d} - {table.penalty:d} * len(issues)"
    local["quality_issues"] = "issues"
    items = "".join(
        f"        {name!r}: {local.get(name, 'None')},\n" for name in table.column_names
    )
    lines.append("    return {\n" + items + "    }")
    return compile_function("validate_and_score", lines, namespace)  # type: ignore[no-any-return]


def _enricher(table: FieldTable) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """enrich for ``table``: fill in a customer's business fields; returns it."""
    namespace: dict[str, Any] = {"_mix": _mix}
    lines = [
        "def enrich(customer, seed):",
        '    """Fill in the business fields of a customer from validate_and_score; returns it."""',
    ]
    for i, field in enumerate(table.business):
        slot = i % _DRAWS_PER_MIX
        if slot == 0:  # one mix feeds five fields; a sixth and on get the next mix, chained
            previous = "mixed" if i else "seed"
            lines.append(f"    mixed = _mix({previous}, customer['customer_id'])")
        namespace[f"share{i}"] = _share_table(field.values, field.shares)
        draw = f"(mixed >> {_DRAW_BITS * slot}) & {_DRAW_MASK}"
        lines.append(f"    customer[{field.name!r}] = share{i}[{draw}]")
    lines.append("    return customer")
    return compile_function("enrich", lines, namespace)  # type: ignore[no-any-return]


RULES: Final = RecordRules(FIELD_TABLE)
validate_and_score: Final = RULES.validate_and_score
enrich: Final = RULES.enrich
business_fields: Final = RULES.business_fields
process: Final = RULES.process
