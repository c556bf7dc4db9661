"""The shapes of what comes in and what goes out, as pydantic models.

The hot path handles plain dicts built by ``rules`` (pydantic per record would cost more than
the rest of the pipeline); these models document the contract, give consumers a JSON Schema
(``customer-pipeline schema``) and let tests validate every file we write.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt
from pydantic.json_schema import GenerateJsonSchema

from ._version import __version__
from .fields import (
    FIELD_TABLE,
    AcquisitionChannel,
    ActivityStatus,
    CustomerTier,
    EngagementLevel,
    MarketSegment,
)

SCHEMA_DIALECT: Final = GenerateJsonSchema.schema_dialect  # JSON Schema 2020-12

# What Python's ``\s`` and str.strip() call whitespace, spelled out: ECMA-262's ``\s`` (the
# dialect of JSON Schema patterns) differs, and the patterns must say what the rules accept.
WHITESPACE: Final = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS: Final = WHITESPACE
# The email and avatar rules of ``fields``, as patterns (a test holds them together). They are
# claimed instead of the email and uri formats, which are stricter than the rules: RFC 5321
# refuses "a..b@example.com" and RFC 3986 "https://x/a<b>", and the rules accept both.
EMAIL_DOMAIN_PATTERN: Final = rf"^[^@{_WS}.]+(?:\.[^@{_WS}.]+)+$"
EMAIL_PATTERN: Final = rf"^[^@{_WS}]+@[^@{_WS}.]+(?:\.[^@{_WS}.]+)+$"
AVATAR_PATTERN: Final = (
    rf"^https?://(?:[^/?#@]*@[^{_WS}/?#@:][^{_WS}/?#]*|[^{_WS}/?#@:][^{_WS}/?#@]*)"
    rf"(?:[/?#][^{_WS}]*)?$"
)


def _timestamp() -> Any:
    """A field holding an ISO 8601 UTC timestamp, as report.utc_now writes it."""
    return Field(description="ISO 8601, UTC", json_schema_extra={"format": "date-time"})


def _complete_rule() -> dict[str, Any]:
    """The rule that complete is true exactly when no page failed and no reason is given."""
    return {
        "if": {"properties": {"complete": {"const": True}}},
        "then": {
            "properties": {"failed_pages": {"maxItems": 0}, "incomplete_reasons": {"maxItems": 0}}
        },
        "else": {"properties": {"incomplete_reasons": {"minItems": 1}}},
    }


# A value kept although it broke its rule is flagged "<field>:invalid"; any other value passed.
_HELD_TO_RULES: Final[dict[str, Any]] = {
    "allOf": [
        {
            "if": {"properties": {"quality_issues": {"contains": {"const": f"{name}:invalid"}}}},
            "else": {"properties": {name: {"pattern": pattern}}},
        }
        for name, pattern in (("email", EMAIL_PATTERN), ("avatar", AVATAR_PATTERN))
    ]
}


class RawUser(BaseModel):
    """A user as the API sends it. Lenient: every field may be missing or of any type."""

    model_config = ConfigDict(extra="allow")

    id: Any = None
    email: Any = None
    first_name: Any = None
    last_name: Any = None
    avatar: Any = None


class ApiEnvelope(BaseModel):
    """One listing page as the API sends it; extra keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    page: Any = None
    per_page: Any = None
    total: Any = None
    total_pages: Any = None
    data: list[Any]


class Customer(BaseModel):
    """One processed, analytics-ready customer."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_HELD_TO_RULES)

    # The columns of fields.FIELD_TABLE, in its order (a test holds them together).
    customer_id: int = Field(ge=1)
    first_name: str | None
    last_name: str | None
    full_name: str | None
    email: str | None
    email_domain: str | None = Field(
        description="lower-cased; null when the email is invalid",
        json_schema_extra={"pattern": EMAIL_DOMAIN_PATTERN},
    )
    avatar: str | None
    engagement_level: EngagementLevel
    activity_status: ActivityStatus
    acquisition_channel: AcquisitionChannel
    market_segment: MarketSegment
    customer_tier: CustomerTier
    data_quality_score: int = Field(ge=FIELD_TABLE.min_score, le=FIELD_TABLE.top_score)
    quality_issues: list[str] = Field(description='e.g. ["email:invalid", "last_name:missing"]')


class QualitySummary(BaseModel):
    """Customers per quality band, under the seed's keys."""

    model_config = ConfigDict(extra="forbid")

    # The bands of fields.FIELD_TABLE, in its order (a test holds them together).
    high_quality: int = Field(ge=0, description="data_quality_score >= 90")
    medium_quality: int = Field(ge=0, description="data_quality_score 70-89")
    low_quality: int = Field(ge=0, description="data_quality_score < 70")


class ExportMetadata(BaseModel):
    """The ``metadata`` block of the export."""

    model_config = ConfigDict(json_schema_extra=_complete_rule())

    total_customers: int
    export_timestamp: str = _timestamp()
    data_quality_summary: QualitySummary
    complete: bool = Field(description="false when pages may be missing: failed, or past max_pages")
    failed_pages: list[int]
    incomplete_reasons: list[str] = Field(
        default_factory=list,
        description='why complete is false, e.g. "the API reports 100050 pages; max_pages is '
        '100000"; empty when it is true',
    )
    source: str = Field(description="the API's base URL (never the key)")
    seed: int
    pipeline_version: str


class ExportDocument(BaseModel):
    """``processed_customers.json``: customers sorted by customer_id."""

    metadata: ExportMetadata
    customers: list[Customer]


class Rejection(BaseModel):
    """One line of ``rejected_records.jsonl``."""

    page: int
    position: int
    reason: str
    record: Any


class RunInfo(BaseModel):
    """The report's ``run`` block: when the run was, how it ended and its settings."""

    model_config = ConfigDict(json_schema_extra=_complete_rule())

    run_id: str | None = Field(
        None, description="the id every line of this run's log carries (run_id in JSON lines)"
    )
    started_at: str = _timestamp()
    finished_at: str = _timestamp()
    elapsed_s: NonNegativeFloat
    complete: bool
    failed_pages: list[int]
    incomplete_reasons: list[str] = Field(description="why complete is false; empty when true")
    resumed_pages: NonNegativeInt = Field(description="pages taken from the checkpoint")
    source: str = Field(description="the API's base URL (never the key)")
    seed: int
    pipeline_version: str
    settings: dict[str, Any] = Field(
        description="the run's settings, without the API key",
        json_schema_extra={"not": {"required": ["api_key"]}},
    )


class Counts(BaseModel):
    """The report's ``counts`` block: raw_records = unique + duplicates removed + rejected."""

    raw_records: NonNegativeInt
    unique_customers: NonNegativeInt
    duplicates_removed: NonNegativeInt
    rejected: NonNegativeInt


class IssueCounts(BaseModel):
    """How many unique customers had a field missing, and how many had it invalid."""

    model_config = ConfigDict(extra="forbid")

    # ISSUE_KINDS, in its order (a test holds them together).
    missing: NonNegativeInt
    invalid: NonNegativeInt


class IssuesPerField(BaseModel):
    """Issue counts for every scored field."""

    model_config = ConfigDict(extra="forbid")

    # The rules of fields.FIELD_TABLE, in its order (a test holds them together).
    email: IssueCounts
    first_name: IssueCounts
    last_name: IssueCounts
    avatar: IssueCounts


class QualityFigures(BaseModel):
    """The report's ``quality`` block, over the unique customers."""

    mean_score: float | None = Field(description="null when there are no customers")
    min_score: int | None
    max_score: int | None
    bands: QualitySummary
    issues_per_field: IssuesPerField


class ValueShare(BaseModel):
    """How many unique customers got a business-field value, and their share of all."""

    model_config = ConfigDict(extra="forbid")

    count: NonNegativeInt
    share: float = Field(ge=0, le=1)


def _every(enum: type[StrEnum]) -> Any:
    """A field mapping every value of ``enum`` (zero counts included) to its ValueShare."""
    return Field(json_schema_extra={"required": [str(value) for value in enum]})


class BusinessFields(BaseModel):
    """The report's ``business_fields`` block: every value of every business field."""

    model_config = ConfigDict(extra="forbid")

    # The business fields of fields.FIELD_TABLE, in its order (a test holds them together).
    engagement_level: dict[EngagementLevel, ValueShare] = _every(EngagementLevel)
    activity_status: dict[ActivityStatus, ValueShare] = _every(ActivityStatus)
    acquisition_channel: dict[AcquisitionChannel, ValueShare] = _every(AcquisitionChannel)
    market_segment: dict[MarketSegment, ValueShare] = _every(MarketSegment)
    customer_tier: dict[CustomerTier, ValueShare] = _every(CustomerTier)


class ApiFigures(BaseModel):
    """The report's ``api`` block: what talking to the API cost."""

    requests: NonNegativeInt
    successes: NonNegativeInt
    failures_by_status: dict[str, NonNegativeInt] = Field(
        description='failed answers by status ("503") or error ("ReadTimeout", "invalid_body")'
    )
    retries: NonNegativeInt
    rate_limited_429: NonNegativeInt
    rate_limit_wait_s: NonNegativeFloat = Field(description="time spent waiting on rate_limit")
    retry_after_wait_s: NonNegativeFloat = Field(description="pauses ordered by Retry-After")
    bytes_received: NonNegativeInt
    pages_fetched: NonNegativeInt
    max_in_flight: NonNegativeInt
    cache_hits: NonNegativeInt = Field(0, description="answered by --cache, no request made")
    cache_misses: NonNegativeInt = Field(0, description="--cache had no answer: the API was asked")
    cache_revalidated: NonNegativeInt = Field(
        0, description="stale --cache answers the API confirmed (304)"
    )
    total_pages: NonNegativeInt | None = Field(description="null when the API never said")
    failed_pages: list[int]


class Timings(BaseModel):
    """The report's ``timings`` block: seconds per stage, and throughput."""

    fetch_s: NonNegativeFloat
    validate_s: NonNegativeFloat
    enrich_s: NonNegativeFloat
    dedup_s: NonNegativeFloat
    write_s: NonNegativeFloat
    total_s: NonNegativeFloat
    records_per_s: NonNegativeFloat


class SummaryReport(BaseModel):
    """``summary_report.json``."""

    model_config = ConfigDict(extra="allow")

    run: RunInfo
    counts: Counts
    quality: QualityFigures
    business_fields: BusinessFields
    api: ApiFigures
    timings: Timings


def _document_schema(model: type[BaseModel], document: str) -> dict[str, Any]:
    """The JSON Schema of ``model``, named by a URN that holds the pipeline's major version."""
    major = __version__.split(".", 1)[0]
    identity = f"urn:customer-pipeline:schema:{document}:v{major}"
    return {"$schema": SCHEMA_DIALECT, "$id": identity, **model.model_json_schema()}


def export_schema() -> dict[str, Any]:
    """The JSON Schema of processed_customers.json."""
    return _document_schema(ExportDocument, "processed_customers")


def report_schema() -> dict[str, Any]:
    """The JSON Schema of summary_report.json."""
    return _document_schema(SummaryReport, "summary_report")
