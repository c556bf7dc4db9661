"""The record rules of SPEC section 3, as pure functions over plain values.

Nothing here does I/O or keeps state, so every rule is testable on its own and fast on the hot
path (a processed customer is a plain dict in the export's key order).
"""

from __future__ import annotations

from typing import Any, Final

from ._random import stable_units

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
_ENRICH_SALT: Final = b"enrich"
_URL_ENDS: Final = "/?#"


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
        number = int(text)
    elif value is None:
        raise Rejected("id missing")
    else:
        raise Rejected("id is not an integer")
    if number < 1:
        raise Rejected("id is less than 1")
    if number > MAX_ID:
        raise Rejected("id is larger than 2**63-1")
    return number


def _text(value: Any) -> tuple[str | None, str | None]:
    """(trimmed text or None, issue or None) for a field that should be a non-blank string."""
    if value is None:
        return None, "missing"
    if not isinstance(value, str):
        return None, "invalid"
    text = value.strip()
    if not text:
        return None, "missing"
    return text, None


def email_domain(email: str) -> str | None:
    """The lower-cased domain if ``email`` (already trimmed) is valid, else None."""
    local, at, domain = email.partition("@")
    if not at or not local or "@" in domain or "." not in domain:
        return None
    if any(ch.isspace() for ch in email):
        return None
    if "" in domain.split("."):
        return None
    return domain.lower()


def is_valid_avatar(url: str) -> bool:
    """An http or https URL with a host (``url`` already trimmed)."""
    if url.startswith("https://"):
        rest = url[8:]
    elif url.startswith("http://"):
        rest = url[7:]
    else:
        return False
    if any(ch.isspace() for ch in url):
        return False
    end = len(rest)
    for mark in _URL_ENDS:
        index = rest.find(mark)
        if index != -1 and index < end:
            end = index
    host = rest[:end].rpartition("@")[2]
    return bool(host) and not host.startswith(":")


def quality_band(score: int) -> str:
    """high >= 90, medium 70-89, low < 70."""
    if score >= 90:
        return "high"
    if score >= 70:
        return "medium"
    return "low"


def business_fields(seed: int, customer_id: int) -> tuple[str, str, str, str, str]:
    """The five business fields: deterministic per (seed, customer_id), shares as specified."""
    units = stable_units(seed, customer_id, _ENRICH_SALT, 5)
    values = []
    for (_, choices), unit in zip(BUSINESS_FIELDS, units, strict=True):
        for value, cumulative in choices:
            if unit < cumulative:
                values.append(value)
                break
    a, b, c, d, e = values
    return a, b, c, d, e


def validate_and_score(raw: Any) -> dict[str, Any]:
    """A customer without business fields, from one raw record. Raises Rejected."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    customer_id = parse_id(raw.get("id"))
    issues: list[str] = []

    email, issue = _text(raw.get("email"))
    domain = None
    if issue is None:
        assert email is not None
        domain = email_domain(email)
        if domain is None:
            issue = "invalid"
    if issue is not None:
        issues.append("email:" + issue)

    first_name, issue = _text(raw.get("first_name"))
    if issue is not None:
        issues.append("first_name:" + issue)
    last_name, issue = _text(raw.get("last_name"))
    if issue is not None:
        issues.append("last_name:" + issue)

    avatar, issue = _text(raw.get("avatar"))
    if issue is None and not is_valid_avatar(avatar):  # type: ignore[arg-type]
        issue = "invalid"
    if issue is not None:
        issues.append("avatar:" + issue)

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
        "data_quality_score": 100 - 10 * len(issues),
        "quality_issues": issues,
    }


def enrich(customer: dict[str, Any], seed: int) -> dict[str, Any]:
    """The customer in export key order, with its business fields."""
    engagement, activity, channel, segment, tier = business_fields(seed, customer["customer_id"])
    return {
        "customer_id": customer["customer_id"],
        "first_name": customer["first_name"],
        "last_name": customer["last_name"],
        "full_name": customer["full_name"],
        "email": customer["email"],
        "email_domain": customer["email_domain"],
        "avatar": customer["avatar"],
        "engagement_level": engagement,
        "activity_status": activity,
        "acquisition_channel": channel,
        "market_segment": segment,
        "customer_tier": tier,
        "data_quality_score": customer["data_quality_score"],
        "quality_issues": customer["quality_issues"],
    }


def process(raw: Any, seed: int) -> dict[str, Any]:
    """validate_and_score then enrich: one raw record to one customer. Raises Rejected."""
    return enrich(validate_and_score(raw), seed)


def dedup_rank(score: int, page: int, position: int) -> tuple[int, int, int]:
    """Larger wins: the highest score, then the lowest page, then the earliest position."""
    return (score, -page, -position)
