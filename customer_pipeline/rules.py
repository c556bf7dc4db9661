"""The record rules (the README's "Output" states them), as pure functions over plain values.

Nothing here does I/O or keeps state, so every rule is testable on its own and fast on the hot
path (a processed customer is a plain dict in the export's key order).
"""

from __future__ import annotations

import re
from typing import Any, Final

FIELDS: Final = ("email", "first_name", "last_name", "avatar")
MAX_ID: Final = 2**63 - 1  # beyond this, JSON consumers (BigQuery, JavaScript) lose the id

# Business fields: (field, [(value, cumulative share), ...]); the last share is 1.0.
BUSINESS_FIELDS: Final[tuple[tuple[str, tuple[tuple[str, float], ...]], ...]] = (
    ("engagement_level", (("high", 0.30), ("medium", 0.80), ("low", 1.0))),
    ("activity_status", (("active", 0.80), ("inactive", 1.0))),
    ("acquisition_channel", (("website", 0.50), ("mobile", 0.80), ("email", 1.0))),
    ("market_segment", (("US-West", 0.30), ("US-East", 0.60), ("EU", 0.85), ("APAC", 1.0))),
    ("customer_tier", (("basic", 0.60), ("premium", 0.90), ("enterprise", 1.0))),
)
# Exactly one @, a non-empty local part, a dotted domain with no empty label, no whitespace.
_EMAIL: Final = re.compile(r"[^@\s]+@([^@\s.]+(?:\.[^@\s.]+)+)").fullmatch
# http(s)://, then a host (not empty, not just a port), no whitespace; userinfo is checked
# apart, since it is rare and a pattern for it costs every URL.
_AVATAR: Final = re.compile(r"https?://[^\s/?#@:]\S*").fullmatch
_AUTHORITY_END: Final = re.compile(r"[/?#]").split
_USERINFO_HOST: Final = re.compile(r"https?://[^/?#@]*@[^\s/?#@:][^\s/?#]*(?:[/?#]\S*)?").fullmatch


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


def email_domain(email: str) -> str | None:
    """The lower-cased domain if ``email`` (already trimmed) is valid, else None."""
    match = _EMAIL(email)
    return match[1].lower() if match else None


def is_valid_avatar(url: str) -> bool:
    """An http or https URL with a host (``url`` already trimmed)."""
    if "@" in url and "@" in _AUTHORITY_END(url.partition("://")[2], 1)[0]:
        return _USERINFO_HOST(url) is not None
    return _AVATAR(url) is not None


def quality_band(score: int) -> str:
    """high >= 90, medium 70-89, low < 70."""
    if score >= 90:
        return "high"
    if score >= 70:
        return "medium"
    return "low"


_MASK64: Final = (1 << 64) - 1
_TABLE_BITS: Final = 12
_TABLE_MASK: Final = (1 << _TABLE_BITS) - 1


def _share_table(choices: tuple[tuple[str, float], ...]) -> tuple[str, ...]:
    """Maps each 12-bit uniform value to its choice, by cumulative share (bias < 0.03%)."""
    size = 1 << _TABLE_BITS
    table: list[str] = []
    for value, cumulative in choices:
        table.extend([value] * (round(cumulative * size) - len(table)))
    return tuple(table)


_TABLES: Final = tuple(_share_table(choices) for _, choices in BUSINESS_FIELDS)


def _mix(seed: int, customer_id: int) -> int:
    """splitmix64 of (seed, id): 64 well-mixed bits, the same on every platform and run."""
    z = customer_id * 0x9E3779B97F4A7C15 + seed * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def business_fields(seed: int, customer_id: int) -> tuple[str, str, str, str, str]:
    """The five business fields: deterministic per (seed, customer_id), shares as specified."""
    z = _mix(seed, customer_id)
    a, b, c, d, e = _TABLES
    m = _TABLE_MASK
    return a[z & m], b[(z >> 12) & m], c[(z >> 24) & m], d[(z >> 36) & m], e[(z >> 48) & m]


def validate_and_score(raw: Any) -> dict[str, Any]:
    """A customer from one raw record, business fields still None. Raises Rejected."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    customer_id = parse_id(raw.get("id"))
    issues: list[str] = []

    email = raw.get("email")
    domain = None
    if isinstance(email, str) and (email := email.strip()):
        domain = email_domain(email)
        if domain is None:
            issues.append("email:invalid")
    else:
        issues.append("email:missing" if email is None or email == "" else "email:invalid")
        email = None

    first_name = raw.get("first_name")
    if not isinstance(first_name, str) or not (first_name := first_name.strip()):
        issues.append(_missing_or_invalid("first_name", first_name))
        first_name = None
    last_name = raw.get("last_name")
    if not isinstance(last_name, str) or not (last_name := last_name.strip()):
        issues.append(_missing_or_invalid("last_name", last_name))
        last_name = None

    avatar = raw.get("avatar")
    if isinstance(avatar, str) and (avatar := avatar.strip()):
        if not is_valid_avatar(avatar):
            issues.append("avatar:invalid")
    else:
        issues.append(_missing_or_invalid("avatar", avatar))
        avatar = None

    if first_name and last_name:
        full_name: str | None = f"{first_name} {last_name}"
    else:
        full_name = first_name or last_name

    return {
        "customer_id": customer_id,
        "first_name": first_name,
        "last_name": last_name,
        "full_name": full_name,
        # An invalid email is kept as sent (trimmed) so it can be fixed at the source.
        "email": email,
        "email_domain": domain,
        "avatar": avatar,
        "engagement_level": None,
        "activity_status": None,
        "acquisition_channel": None,
        "market_segment": None,
        "customer_tier": None,
        "data_quality_score": 100 - 10 * len(issues),
        "quality_issues": issues,
    }


def _missing_or_invalid(field: str, value: Any) -> str:
    """The issue for a field that is not a non-blank string ("" is what strip() left)."""
    return f"{field}:missing" if value is None or value == "" else f"{field}:invalid"


def enrich(customer: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fill in the business fields of a customer from validate_and_score; returns it."""
    (
        customer["engagement_level"],
        customer["activity_status"],
        customer["acquisition_channel"],
        customer["market_segment"],
        customer["customer_tier"],
    ) = business_fields(seed, customer["customer_id"])
    return customer


def process(raw: Any, seed: int) -> dict[str, Any]:
    """validate_and_score then enrich: one raw record to one customer. Raises Rejected."""
    return enrich(validate_and_score(raw), seed)
