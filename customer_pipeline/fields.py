"""The record schema in one table: the scored fields, the derived and business columns, the bands.

Every part that knows a customer field by name reads it from ``FIELD_TABLE``: the rules that
validate, score and enrich a record (``rules``), the packed summary code (``dedup``), the
report's per-field and per-value figures (``report``) and the export model (``models``, whose
enums live here). A new field is one entry here plus its column in ``models.Customer``, which
a test holds to this table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Final, NamedTuple

ISSUE_KINDS: Final = ("missing", "invalid")

# Exactly one @, a non-empty local part, a dotted domain with no empty label, no whitespace.
_EMAIL: Final = re.compile(r"[^@\s]+@([^@\s.]+(?:\.[^@\s.]+)+)").fullmatch
# http(s)://, then a host (not empty, not just a port), no whitespace; userinfo is checked
# apart, since it is rare and a pattern for it costs every URL.
_AVATAR: Final = re.compile(r"https?://[^\s/?#@:]\S*").fullmatch
_AUTHORITY_END: Final = re.compile(r"[/?#]").split
_USERINFO_HOST: Final = re.compile(r"https?://[^/?#@]*@[^\s/?#@:][^\s/?#]*(?:[/?#]\S*)?").fullmatch


def email_domain(email: str) -> str | None:
    """The lower-cased domain if ``email`` (already trimmed) is valid, else None."""
    match = _EMAIL(email)
    return match[1].lower() if match else None


def is_valid_avatar(url: str) -> bool:
    """An http or https URL with a host (``url`` already trimmed)."""
    if "@" in url and "@" in _AUTHORITY_END(url.partition("://")[2], 1)[0]:
        return _USERINFO_HOST(url) is not None
    return _AVATAR(url) is not None


def full_name(first_name: str | None, last_name: str | None) -> str | None:
    """The valid name parts joined by one space; None if there are none."""
    if first_name and last_name:
        return f"{first_name} {last_name}"
    return first_name or last_name


# The business fields' values, as enums so that the export model and its JSON Schema name them.
class EngagementLevel(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class ActivityStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class AcquisitionChannel(StrEnum):
    WEBSITE = "website"
    MOBILE = "mobile"
    EMAIL = "email"


class MarketSegment(StrEnum):
    US_WEST = "US-West"
    US_EAST = "US-East"
    EU = "EU"
    APAC = "APAC"


class CustomerTier(StrEnum):
    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class RuleField(NamedTuple):
    """A scored field the API sends: missing when absent or blank, invalid when ``check`` fails."""

    name: str
    # Called on the trimmed, non-blank string; a falsy result means invalid. None: any string is.
    check: Callable[[str], object] | None = None
    # A column that keeps check's result for a valid value (null otherwise), e.g. email_domain.
    keep_as: str | None = None


class DerivedField(NamedTuple):
    """A column computed by ``derive`` from the values of earlier columns, named in ``inputs``."""

    name: str
    derive: Callable[..., object]
    inputs: tuple[str, ...]


class BusinessField(NamedTuple):
    """A column drawn per (seed, customer_id): one of ``values``, with ``shares`` summing to 1."""

    name: str
    values: tuple[str, ...]
    shares: tuple[float, ...]


class Band(NamedTuple):
    """A quality band: scores from ``min_score`` up, counted under ``key`` in the outputs."""

    name: str
    key: str
    min_score: int


class FieldTable:
    """The whole record schema, checked for consistency when it is built (ValueError if not)."""

    def __init__(
        self,
        *,
        rules: Iterable[RuleField],
        derived: Iterable[DerivedField],
        business: Iterable[BusinessField],
        columns: Iterable[str],
        bands: Iterable[Band],
        top_score: int = 100,
        penalty: int = 10,
    ) -> None:
        self.rules = tuple(rules)
        self.derived = tuple(derived)
        # Plain str values: enum members would reach the export and the report's keys.
        self.business = tuple(
            BusinessField(f.name, tuple(str(v) for v in f.values), tuple(f.shares))
            for f in business
        )
        self.columns = tuple(columns)
        self.bands = tuple(bands)
        self.top_score = top_score
        self.penalty = penalty
        self.rule_names = tuple(f.name for f in self.rules)
        self.business_names = tuple(f.name for f in self.business)
        # Every column of a processed customer, in the export's key order.
        self.column_names = (
            *self.columns, *self.business_names, "data_quality_score", "quality_issues"
        )  # fmt: skip
        self.min_score = self.score(len(self.rules))
        self._check()

    def score(self, issues: int) -> int:
        """The data-quality score of a customer with this many missing or invalid fields."""
        return self.top_score - self.penalty * issues

    def band(self, score: int) -> Band:
        """The band a score falls in (the bands cover every score this table gives)."""
        for band in self.bands:
            if score >= band.min_score:
                return band
        raise ValueError(f"score {score} is below every band")

    def _check(self) -> None:
        """Raise ValueError naming the first inconsistency."""
        kept = [f.keep_as for f in self.rules if f.keep_as is not None]
        named = ["customer_id", *self.rule_names, *kept, *(f.name for f in self.derived)]
        _unique("column", [*named, *self.business_names, "data_quality_score", "quality_issues"])
        for name in self.rule_names:
            if ":" in name:  # quality issues read "name:kind"
                raise ValueError(f"field table: rule field {name!r} has a ':' in its name")
        if sorted(self.columns) != sorted(named):
            raise ValueError(
                f"field table: columns {list(self.columns)} must list customer_id and every rule,"
                f" kept and derived field once: {named}"
            )
        known = {"customer_id", *self.rule_names, *kept}
        for derived in self.derived:
            if not known.issuperset(derived.inputs):
                raise ValueError(
                    f"field table: {derived.name} derives from {list(derived.inputs)}; each must"
                    f" be customer_id, a rule or kept field, or an earlier derived field"
                )
            known.add(derived.name)
        for field in self.business:
            _unique(f"value of {field.name}", field.values)
            if not field.values or len(field.values) != len(field.shares):
                raise ValueError(
                    f"field table: {field.name} has {len(field.values)} values and"
                    f" {len(field.shares)} shares; give one share per value"
                )
            if min(field.shares) <= 0 or not math.isclose(math.fsum(field.shares), 1.0):
                raise ValueError(f"field table: the shares of {field.name} must be > 0, sum 1")
        _unique("band", [b.name for b in self.bands])
        minimums = [b.min_score for b in self.bands]
        if not minimums or minimums != sorted(minimums, reverse=True):
            raise ValueError("field table: list the bands from the highest min_score down")
        if self.penalty <= 0:
            raise ValueError(f"field table: the penalty per issue must be > 0, not {self.penalty}")
        if minimums[-1] > self.min_score:
            raise ValueError(
                f"field table: the lowest band starts at {minimums[-1]}, above the lowest"
                f" score {self.min_score}"
            )


def _unique(what: str, names: Iterable[str]) -> None:
    """Raise ValueError if a name repeats."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"field table: {what} {name!r} appears twice")
        seen.add(name)


FIELD_TABLE: Final = FieldTable(
    # In this order in quality_issues and the report.
    rules=(
        RuleField("email", check=email_domain, keep_as="email_domain"),
        RuleField("first_name"),
        RuleField("last_name"),
        RuleField("avatar", check=is_valid_avatar),
    ),
    derived=(DerivedField("full_name", full_name, ("first_name", "last_name")),),
    business=(
        BusinessField("engagement_level", tuple(EngagementLevel), (0.30, 0.50, 0.20)),
        BusinessField("activity_status", tuple(ActivityStatus), (0.80, 0.20)),
        BusinessField("acquisition_channel", tuple(AcquisitionChannel), (0.50, 0.30, 0.20)),
        BusinessField("market_segment", tuple(MarketSegment), (0.30, 0.30, 0.25, 0.15)),
        BusinessField("customer_tier", tuple(CustomerTier), (0.60, 0.30, 0.10)),
    ),
    columns=(
        "customer_id",
        "first_name",
        "last_name",
        "full_name",
        "email",
        "email_domain",
        "avatar",
    ),
    bands=(
        Band("high", "high_quality", 90),
        Band("medium", "medium_quality", 70),
        Band("low", "low_quality", 0),
    ),
)
